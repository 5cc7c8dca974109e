// vaelab explorer: sliders, latent map and uploads talking to the JSON API of vaelab/explore/server.py.
// Plain JavaScript, no build step. Decode requests are throttled "latest wins": while one is in
// flight, slider moves only update z, and one more request with the newest z follows when it returns.
"use strict";

const SLIDER_RANGE = 3; // sliders span -3..3 standard deviations of the prior N(0, I)
// Tableau-10 colours: distinguishable, colour-blind-aware for up to 10 classes.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                 "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

const state = { info: null, z: [], point: null, upload: null, bounds: null };
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let payload;
  try {
    payload = await response.json();
  } catch (_) {
    throw new Error(`${path}: the server answered ${response.status} without JSON`);
  }
  if (!response.ok) throw new Error(payload.error || `${path}: HTTP ${response.status}`);
  return payload;
}

function postJSON(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function currentLabel() {
  return state.info.label_conditional ? Number($("label").value) : null;
}

function colour(label) {
  return label === null || label === undefined ? "#4e79a7" : PALETTE[label % PALETTE.length];
}

// ---- decoding, throttled -------------------------------------------------------------------------
let inFlight = false;
let queued = false;

function requestDecode() {
  if (inFlight) { queued = true; return; }
  inFlight = true;
  queued = false;
  postJSON("/api/decode", { z: state.z, label: currentLabel() })
    .then((result) => { showDecoded(result); showError(""); })
    .catch((err) => showError(err.message))
    .finally(() => { inFlight = false; if (queued) requestDecode(); });
}

function showDecoded(result) {
  $("decoded").src = result.image;
  state.point = result.point;
  drawMap();
}

// ---- sliders --------------------------------------------------------------------------------------
// Dimensions are shown numbered from 1, as in the run's plots (z1 is the first); the API's `index`
// and `z` array are 0-based, so z_d on the page is state.z[d - 1].
function dimName(index) {
  return `z${index + 1}`;
}

function buildSliders() {
  const box = $("sliders");
  box.replaceChildren();
  for (const dim of state.info.dims) {
    const row = document.createElement("div");
    row.className = "slider" + (dim.active ? "" : " inactive");
    const id = `dim${dim.index}`; // element ids follow the API's 0-based index
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = `${dimName(dim.index)} · KL ${dim.kl.toFixed(2)}`;
    if (!dim.active) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "inactive";
      label.append(tag);
    }
    const value = document.createElement("span");
    value.className = "value";
    value.id = `${id}-value`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", id, min: -SLIDER_RANGE, max: SLIDER_RANGE, step: 0.01, value: 0 });
    input.dataset.dim = dim.index;
    input.title = `variance of E[${dimName(dim.index)}|x] over the test set: ${dim.activity.toFixed(3)}`;
    input.addEventListener("input", () => {
      state.z[dim.index] = Number(input.value);
      value.textContent = state.z[dim.index].toFixed(2);
      requestDecode();
    });
    row.append(label, value, input);
    box.append(row);
  }
}

function setZ(z) {
  state.z = z.slice();
  for (const input of document.querySelectorAll("#sliders input")) {
    const d = Number(input.dataset.dim);
    input.value = Math.max(-SLIDER_RANGE, Math.min(SLIDER_RANGE, z[d]));
    $(`dim${d}-value`).textContent = z[d].toFixed(2);
  }
}

// ---- latent map -----------------------------------------------------------------------------------
function mapBounds(points) {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of points) {
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  if (!isFinite(x0)) [x0, x1, y0, y1] = [-3, 3, -3, 3];
  const pad = 0.06 * Math.max(x1 - x0, y1 - y0, 1e-3);
  return { x0: x0 - pad, x1: x1 + pad, y0: y0 - pad, y1: y1 + pad };
}

function canvasTransform(canvas) {
  const b = state.bounds;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  const toPixel = ([x, y]) => [(x - b.x0) / (b.x1 - b.x0) * w, h - (y - b.y0) / (b.y1 - b.y0) * h];
  const toData = (px, py) => [b.x0 + px / w * (b.x1 - b.x0), b.y0 + (h - py) / h * (b.y1 - b.y0)];
  return { w, h, toPixel, toData };
}

function drawMarker(ctx, [px, py], style) {
  ctx.save();
  ctx.lineWidth = 2.5;
  ctx.strokeStyle = "#fff";
  ctx.beginPath();
  if (style === "upload") {
    ctx.moveTo(px, py - 9); ctx.lineTo(px + 9, py); ctx.lineTo(px, py + 9); ctx.lineTo(px - 9, py); ctx.closePath();
    ctx.fillStyle = "#e11d48";
    ctx.fill();
    ctx.stroke();
  } else {
    ctx.arc(px, py, 8, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.strokeStyle = "#111";
    ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.arc(px, py, 8, 0, 2 * Math.PI);
    ctx.moveTo(px - 12, py); ctx.lineTo(px + 12, py); ctx.moveTo(px, py - 12); ctx.lineTo(px, py + 12);
    ctx.stroke();
  }
  ctx.restore();
}

function drawMap() {
  const canvas = $("map");
  const map = state.info.map;
  const ratio = window.devicePixelRatio || 1;
  const { w, h, toPixel } = canvasTransform(canvas);
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#fbfcfd";
  ctx.fillRect(0, 0, w, h);
  // axes through the origin of the map (the prior mean for a direct map, the data mean for PCA)
  ctx.strokeStyle = "#e3e6eb";
  ctx.lineWidth = 1;
  const [ox, oy] = toPixel([0, 0]);
  ctx.beginPath(); ctx.moveTo(ox, 0); ctx.lineTo(ox, h); ctx.moveTo(0, oy); ctx.lineTo(w, oy); ctx.stroke();
  ctx.globalAlpha = 0.65;
  map.points.forEach((p, i) => {
    const [px, py] = toPixel(p);
    ctx.fillStyle = colour(map.labels ? map.labels[i] : null);
    ctx.beginPath(); ctx.arc(px, py, 2.6, 0, 2 * Math.PI); ctx.fill();
  });
  ctx.globalAlpha = 1;
  const [xName, yName] = axisNames();
  ctx.fillStyle = "#5d6675";
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(xName + " →", 8, h - 8);
  ctx.save(); ctx.translate(14, h - 30); ctx.rotate(-Math.PI / 2); ctx.fillText(yName + " →", 0, 0); ctx.restore();
  if (state.upload) drawMarker(ctx, toPixel(state.upload), "upload");
  if (state.point) drawMarker(ctx, toPixel(state.point), "current");
}

function axisNames() {
  const map = state.info.map;
  if (map.method === "direct") return [dimName(0), state.info.latent_dim > 1 ? dimName(1) : "(none)"];
  return map.explained.map((e, i) => `PC${i + 1} (${Math.round(100 * e)}% of variance)`);
}

function buildLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  const names = state.info.class_names;
  if (!state.info.map.labels) return;
  const present = [...new Set(state.info.map.labels)].sort((a, b) => a - b);
  for (const label of present) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(label);
    item.append(swatch, document.createTextNode(names && names[label] !== undefined ? names[label] : String(label)));
    legend.append(item);
  }
}

function onMapClick(event) {
  const canvas = $("map");
  const rect = canvas.getBoundingClientRect();
  const point = canvasTransform(canvas).toData(event.clientX - rect.left, event.clientY - rect.top);
  postJSON("/api/point", { point, label: currentLabel() })
    .then((result) => { setZ(result.z); showDecoded(result); showError(""); })
    .catch((err) => showError(err.message));
}

// ---- uploads --------------------------------------------------------------------------------------
async function onUpload() {
  const file = $("upload").files[0];
  if (!file) return;
  const message = $("upload-message");
  message.className = "";
  message.textContent = `encoding ${file.name}…`;
  const params = new URLSearchParams();
  if (state.info.label_conditional) params.set("label", $("label").value);
  if ($("invert").checked) params.set("invert", "1");
  try {
    const result = await api(`/api/encode?${params}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file,
    });
    $("upload-input").src = result.input;
    $("reconstruction").src = result.reconstruction;
    $("upload-result").hidden = false;
    message.textContent = `${file.name}: ${result.note}. The diamond on the map marks where it lands; the sliders moved to its code.`;
    state.upload = result.point;
    setZ(result.z);
    requestDecode();
  } catch (err) {
    message.className = "bad";
    message.textContent = `${file.name}: ${err.message}`;
    showError(`upload refused: ${err.message}`);
  }
}

// ---- start ----------------------------------------------------------------------------------------
async function start() {
  try {
    state.info = await api("/api/info");
  } catch (err) {
    showError(`cannot load the model: ${err.message}`);
    return;
  }
  const info = state.info;
  const [c, h, w] = info.input_shape;
  $("subtitle").textContent = `${info.title} — ${w}×${h} ${c === 1 ? "gray" : "RGB"} images, ` +
    `${info.latent_dim}-dimensional latent space, ${info.likelihood} likelihood`;
  $("map-caption").textContent = info.map.method === "direct"
    ? `posterior means of ${info.map.points.length} test images; click to decode a point`
    : `first two principal components of the posterior means of ${info.map.points.length} test images; ` +
      "a click decodes mean + components\u1d40·point";
  $("upload-hint").textContent = `PNG, JPEG or any image Pillow reads, up to ${info.limits.max_upload_bytes / 2 ** 20} MB ` +
    `and ${info.limits.max_side} px a side; it is converted to ${c === 1 ? "gray" : "RGB"} and resized to ${w}×${h}.`;
  if (info.label_conditional) {
    const select = $("label");
    const count = info.class_names ? info.class_names.length : 0;
    for (let i = 0; i < count; i++) select.add(new Option(info.class_names[i], String(i)));
    select.addEventListener("change", requestDecode);
    $("label-row").hidden = false;
  }
  state.bounds = mapBounds(info.map.points);
  buildSliders();
  buildLegend();
  setZ(new Array(info.latent_dim).fill(0));
  $("map").addEventListener("click", onMapClick);
  $("upload").addEventListener("change", onUpload);
  $("zero").addEventListener("click", () => { setZ(new Array(info.latent_dim).fill(0)); requestDecode(); });
  $("random").addEventListener("click", () => { setZ(state.z.map(gaussian)); requestDecode(); });
  window.addEventListener("resize", drawMap);
  requestDecode();
  document.body.dataset.ready = "true";
}

function gaussian() {
  // Box-Muller: one draw from N(0, 1)
  return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
}

start();
