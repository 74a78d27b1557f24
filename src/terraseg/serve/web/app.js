// terraseg web page: upload -> /ui/jobs -> show image, prediction overlay, legend, downloads and a Leaflet map.
"use strict";
const $ = (id) => document.getElementById(id);
// names come from bundles and uploads: escape them before they reach innerHTML
const esc = (v) => String(v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
let map = null;

// With `serve --api-key`, the page asks for the key once and trades it for a session cookie.
async function api(url, options) {
  let r = await fetch(url, options);
  if (r.status === 401) {
    const key = window.prompt("This server needs its API key:");
    if (key) {
      const form = new FormData();
      form.append("key", key);
      const s = await fetch("/ui/session", { method: "POST", body: form });
      if (s.ok) r = await fetch(url, options);
    }
  }
  return r;
}

async function loadModels() {
  const r = await api("/v1/models");
  const models = await r.json();
  if (!r.ok) { $("status").className = "error"; $("status").textContent = models.error; return; }
  $("model").innerHTML = models.map((m) => `<option value="${esc(m.name)}">${esc(m.name)} (${esc(m.task)}, ${esc(m.bands)} bands)</option>`).join("");
  $("models-info").textContent = `${models.length} model(s) served`;
}

function showMap(job) {
  const url = (f) => `/ui/jobs/${job.id}/${f}`;
  $("map").hidden = false;
  if (map) { map.remove(); }
  // No base map: the page works offline; layers sit at their true location (Web Mercator).
  map = L.map("map", { attributionControl: false });
  const b = L.latLngBounds(job.bounds);
  const layers = {
    "image": L.imageOverlay(url(job.files.image), b).addTo(map),
    "prediction": L.imageOverlay(url(job.files.prediction), b, { opacity: 0.7 }).addTo(map),
  };
  // uncertain pixels in yellow to red (a coin toss), certain ones clear; off until ticked
  if (job.files.confidence) { layers["uncertainty"] = L.imageOverlay(url(job.files.confidence), b); }
  if (job.truth) {
    layers["ground truth"] = job.truth.kind === "image"
      ? L.imageOverlay(url(job.truth.file), b, { opacity: 0.7 })
      : L.geoJSON(null, { style: { color: "#00e5ff", weight: 2, fill: false } });
    if (job.truth.kind === "geojson") {
      fetch(url(job.truth.file)).then((r) => r.json()).then((g) => layers["ground truth"].addData(g));
    }
    layers["ground truth"].addTo(map);
  }
  L.control.layers(null, layers, { collapsed: false }).addTo(map);
  map.fitBounds(b);
  window.terrasegLayers = Object.keys(layers);
}

function show(job) {
  const url = (f) => `/ui/jobs/${job.id}/${f}`;
  $("result").hidden = false;
  const conf = job.mean_confidence == null ? "" : `, mean confidence ${(100 * job.mean_confidence).toFixed(1)}%`;
  $("result-title").textContent = `${job.width} x ${job.height} px, ${job.crs || "not georeferenced"}, model ${job.model}${conf}`;
  $("img-image").src = url(job.files.image);
  $("img-prediction").src = url(job.files.prediction);
  $("img-prediction").style.opacity = $("opacity").value;
  $("legend").innerHTML = job.legend.map((c, k) =>
    `<li><span class="swatch" style="background:${esc(c.color)}"></span>${esc(c.name)}: ${esc(job.class_pixels[k])} px</li>`).join("");
  $("downloads").innerHTML = Object.entries(job.files).map(([k, f]) => `<a href="${esc(url(f))}" download>${esc(k)}</a>`).join(" · ");
  if (job.bounds) { showMap(job); } else { $("map").hidden = true; }
  document.body.dataset.state = "done";
}

$("opacity").addEventListener("input", (e) => { $("img-prediction").style.opacity = e.target.value; });

$("upload").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData($("upload"));
  if (!$("truth").files.length) form.delete("truth");
  $("status").className = ""; $("status").textContent = "running...";
  document.body.dataset.state = "running";
  const r = await api("/ui/jobs", { method: "POST", body: form });
  const body = await r.json();
  if (!r.ok) {
    $("status").className = "error"; $("status").textContent = body.error; document.body.dataset.state = "error";
    return;
  }
  $("status").textContent = "done";
  history.pushState(null, "", `/result/${body.id}`);
  show(body);
});

(async () => {
  await loadModels();
  const m = location.pathname.match(/^\/result\/([0-9a-f]+)$/);
  if (m) {
    const r = await api(`/ui/jobs/${m[1]}`);
    if (r.ok) show(await r.json()); else $("status").textContent = (await r.json()).error;
  }
})();
