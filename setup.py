"""Build hook: ship the web page's Leaflet (from npm's node_modules) inside the package.

`pip wheel .` / `pip install .` copy ``node_modules/leaflet/dist/{leaflet.js, leaflet.css, images/}``
(run ``npm ci`` first; ``make install`` does) into ``terraseg/serve/web/vendor/leaflet`` of the build,
so an installed wheel serves its map without a checkout. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithLeaflet(build_py):
    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "node_modules" / "leaflet" / "dist"
        if not (src / "leaflet.js").exists():
            self.warn("node_modules/leaflet not found (run `npm ci`): the wheel's web page will have no map")
            return
        dest = Path(self.build_lib) / "terraseg" / "serve" / "web" / "vendor" / "leaflet"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("leaflet.js", "leaflet.css"):
            shutil.copy2(src / name, dest / name)
        shutil.copytree(src / "images", dest / "images", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithLeaflet})
