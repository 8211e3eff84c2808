// The page of `cm serve`: plain JavaScript over the JSON API (/api/model, /api/generate, /api/edit, /api/held-out).
// Images live at the model's resolution as RGBA arrays; the mask and the strokes are painted pixel by pixel on
// that grid (no antialiasing), so the PNGs sent are exactly what `cm edit` reads from the downloaded files.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null, width: 0, height: 0, channels: 0,
  source: null, mask: null, strokes: null, painting: false, last: null,
  busy: false, again: false, edits: 0, lastEdit: null,
};
window.pageLoadedAt = Date.now(); // a reload would reset it: the browser test checks that edits never reload

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const started = performance.now();
  const response = await fetch(path, options);
  let data;
  try { data = await response.json(); } catch (error) { data = {error: response.statusText}; }
  if (!response.ok) throw new Error(data.error || response.statusText);
  data.request_ms = performance.now() - started;
  return data;
}

function download(name, url) {
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
}

function jsonURL(value) {
  return URL.createObjectURL(new Blob([JSON.stringify(value, null, 2) + "\n"], {type: "application/json"}));
}

const pngURL = (base64) => "data:image/png;base64," + base64;
const ms = (value) => value.toFixed(1) + " ms";
const sigmaText = (sigmas) => sigmas.map((s) => +s.toPrecision(4)).join(", ");

function fillSelect(select, options) {
  select.replaceChildren(...options.map(([value, text]) => new Option(text, value)));
}

function setupGuidance(slider, output, field, guidance) {
  if (!guidance) return;
  field.hidden = false;
  slider.min = guidance.minimum;
  slider.max = guidance.maximum === null ? Math.max(10, guidance.default) : guidance.maximum;
  slider.value = guidance.default;
  const show = () => { output.textContent = (+slider.value).toFixed(2); };
  slider.addEventListener("input", show);
  show();
}

function labelChoice(select) {
  const value = select.value;
  return value === "" ? null : value === "all" ? "all" : Number(value);
}

// ------------------------------------------------------------------ model

async function start() {
  const model = state.model = await api("/api/model");
  const image = model.sample_shape.length === 3;
  [state.channels, state.height, state.width] = image ? model.sample_shape : [0, 0, 0];
  const classes = model.num_classes ? ` · ${model.num_classes} classes` : "";
  $("model-info").textContent = `${model.method} model (${model.parameterization}), step ${model.step}, ` +
    `${model.sample_shape.join("×")}${classes}, weights ${model.weights}, on ${model.device} · ${model.checkpoint}`;
  setupGenerate(model);
  setupEdit(model);
}

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tab")) {
      other.classList.toggle("active", other === tab);
      $(other.dataset.panel).hidden = other !== tab;
    }
  });
}

// ------------------------------------------------------------------ generate

function setupGenerate(model) {
  const teacher = model.parameterization === "denoiser";
  $("steps-field").hidden = $("sigmas-field").hidden = teacher;
  $("teacher-steps-field").hidden = !teacher;
  if (teacher) $("teacher-steps").value = model.teacher_steps;
  const steps = [];
  for (let k = 1; k <= model.max_steps; k++) {
    const searched = model.searched_sigmas[String(k)];
    steps.push([k, `${k} step${k > 1 ? "s" : ""}` + (searched ? ` (searched σ's ${sigmaText(searched)})` : "")]);
  }
  fillSelect($("steps"), steps);
  if (model.num_classes) {
    $("label-field").hidden = false;
    const classes = [...Array(model.num_classes).keys()].map((c) => [c, String(c)]);
    fillSelect($("label"), [["", "random"], ...classes, ["all", "all, in order"]]);
  }
  setupGuidance($("guidance"), $("guidance-value"), $("guidance-field"), model.guidance);
  $("seed-random").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
  $("generate-form").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
}

function generateRequest() {
  const model = state.model;
  const request = {num: Number($("num").value), seed: Number($("seed").value)};
  if (model.parameterization === "denoiser") {
    request.teacher_steps = Number($("teacher-steps").value);
  } else if ($("sigmas").value.trim()) {
    request.sigmas = $("sigmas").value.split(",").filter((s) => s.trim()).map(Number);
  } else {
    request.steps = Number($("steps").value);
  }
  if (model.num_classes) request.label = labelChoice($("label"));
  if (model.guidance) request.guidance = Number($("guidance").value);
  return request;
}

async function generate() {
  $("generate-error").textContent = "";
  $("generate").disabled = true;
  try {
    const result = await api("/api/generate", generateRequest());
    $("results").prepend(resultCard(result));
  } catch (error) {
    $("generate-error").textContent = error.message;
  } finally {
    $("generate").disabled = false;
  }
}

function resultCard(result) {
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.settings = JSON.stringify(result.settings);
  const grid = document.createElement("div");
  grid.className = "grid";
  const images = result.images || [];
  grid.style.gridTemplateColumns = `repeat(${Math.ceil(Math.sqrt(images.length))}, 1fr)`;
  images.forEach((url, i) => {
    const img = document.createElement("img");
    img.className = "sample";
    img.src = url;
    img.title = result.labels ? `class ${result.labels[i]}` : `sample ${i}`;
    grid.append(img);
  });
  if (!result.images) grid.textContent = JSON.stringify(result.samples);
  const request = result.settings.request;
  const meta = document.createElement("p");
  meta.className = "meta";
  meta.textContent = `${ms(result.model_ms)} model · ${ms(result.request_ms)} request · ${result.nfe} NFE · ` +
    `seed ${request.seed}` + (result.guidance === null ? "" : ` · w ${result.guidance}`);
  const sigmas = document.createElement("p");
  sigmas.className = "meta";
  sigmas.textContent = `${state.model.parameterization === "trigflow" ? "t" : "σ"}: ${sigmaText(result.sigmas)}`;
  const png = document.createElement("button");
  png.type = "button";
  png.textContent = "PNG";
  png.addEventListener("click", () => download(`samples-seed${request.seed}.png`, result.grid));
  const settings = document.createElement("button");
  settings.type = "button";
  settings.textContent = "Settings JSON";
  settings.addEventListener("click", () => download(`samples-seed${request.seed}.json`, jsonURL(result.settings)));
  const command = document.createElement("code");
  command.textContent = result.settings.command;
  card.append(grid, meta, sigmas, png, settings, command);
  return card;
}

// ------------------------------------------------------------------ edit

const TASKS = {
  "inpaint": "Inpaint (brush a mask)",
  "stroke": "Strokes → image",
  "super-resolve": "Super-resolution",
  "colorize": "Colorize",
};

function setupEdit(model) {
  if (!model.tasks.length) {
    $("edit-unavailable").hidden = false;
    $("edit-unavailable").textContent = "Editing is not available: " + model.edit_unavailable;
    $("edit-body").hidden = true;
    return;
  }
  const canvas = $("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  state.mask = new Uint8Array(state.width * state.height);
  state.strokes = blank();
  fillSelect($("task"), model.tasks.map((task) => [task, TASKS[task]]));
  fillSelect($("factor"), model.factors.map((p) => [p, `×${p}`]));
  const steps = [1, 2, 4, 8, 16, 40].filter((k) => k <= model.max_edit_steps);
  fillSelect($("edit-steps"), [["", "default"], ...steps.map((k) => [k, String(k)])]);
  $("edit-steps").value = "4";
  $("brush").max = Math.max(1, Math.round(state.width / 6));
  $("brush").value = Math.max(0, Math.round(state.width / 28));
  $("ink-colour").hidden = state.channels !== 3;
  $("ink-grey").hidden = state.channels === 3;
  if (model.num_classes) {
    $("edit-label-field").hidden = false;
    fillSelect($("edit-label"), [...Array(model.num_classes).keys()].map((c) => [c, String(c)]));
  }
  setupGuidance($("edit-guidance"), $("edit-guidance-value"), $("edit-guidance-field"), model.guidance);
  if (model.held_out) {
    $("held-out-index").max = model.held_out - 1;
    $("held-out-note").textContent = `${model.held_out} held-out images`;
  } else {
    $("held-out-controls").hidden = true;
    $("held-out-note").textContent = model.held_out_reason;
  }
  $("pick").addEventListener("click", () => pick(Number($("held-out-index").value)));
  $("pick-random").addEventListener("click", () => pick(Math.floor(Math.random() * model.held_out)));
  $("upload").addEventListener("change", upload);
  $("clear").addEventListener("click", () => { state.mask.fill(0); state.strokes = blank(); changed(false); });
  $("strokes-from-image").addEventListener("click", () => {
    if (state.source) { state.strokes = state.source.slice(); changed(true); }
  });
  for (const id of ["task", "factor", "edit-steps", "edit-seed", "edit-label", "edit-guidance"]) {
    $(id).addEventListener("change", () => changed(true));
  }
  canvas.addEventListener("pointerdown", (event) => {
    if (!paintable()) return;
    canvas.setPointerCapture(event.pointerId);
    state.painting = true;
    state.last = null;
    paintTo(event);
  });
  canvas.addEventListener("pointermove", (event) => { if (state.painting) paintTo(event); });
  const finish = () => {
    if (!state.painting) return;
    state.painting = false;
    requestEdit(); // after each stroke
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  changed(false);
}

function blank() {
  const pixels = new Uint8ClampedArray(state.width * state.height * 4);
  for (let i = 3; i < pixels.length; i += 4) pixels[i] = 255;
  return pixels;
}

const task = () => $("task").value;
const paintable = () => task() === "stroke" || (task() === "inpaint" && state.source !== null);

function ink() {
  if (state.channels === 3) {
    const hex = $("ink-colour").value;
    return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  }
  const grey = Number($("ink-grey").value);
  return [grey, grey, grey];
}

function paintTo(event) {
  const rect = $("canvas").getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) / rect.width * state.width);
  const y = Math.floor((event.clientY - rect.top) / rect.height * state.height);
  const from = state.last || [x, y];
  const count = Math.max(Math.abs(x - from[0]), Math.abs(y - from[1]), 1);
  for (let k = 0; k <= count; k++) {
    paintDisc(Math.round(from[0] + (x - from[0]) * k / count), Math.round(from[1] + (y - from[1]) * k / count));
  }
  state.last = [x, y];
  render();
}

function paintDisc(cx, cy) {
  const radius = Number($("brush").value);
  const colour = ink();
  for (let y = cy - radius; y <= cy + radius; y++) {
    for (let x = cx - radius; x <= cx + radius; x++) {
      if (x < 0 || y < 0 || x >= state.width || y >= state.height) continue;
      if ((x - cx) ** 2 + (y - cy) ** 2 > radius * radius + radius) continue;
      const i = y * state.width + x;
      if (task() === "inpaint") state.mask[i] = 1;
      else state.strokes.set(colour, 4 * i);
    }
  }
}

function lowResolution(pixels, factor) {
  const width = state.width / factor, height = state.height / factor;
  const out = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let dy = 0; dy < factor; dy++) {
          for (let dx = 0; dx < factor; dx++) sum += pixels[4 * ((y * factor + dy) * state.width + x * factor + dx) + c];
        }
        out[4 * (y * width + x) + c] = Math.round(sum / (factor * factor));
      }
      out[4 * (y * width + x) + 3] = 255;
    }
  }
  return {pixels: out, width, height};
}

function pngOf(pixels, width = state.width, height = state.height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(pixels, width, height), 0, 0);
  return canvas.toDataURL("image/png");
}

function maskPixels() {
  const pixels = blank();
  state.mask.forEach((on, i) => { if (on) pixels.fill(255, 4 * i, 4 * i + 3); });
  return pixels;
}

function render() {
  const canvas = $("canvas"), context = canvas.getContext("2d");
  let shown;
  if (task() === "stroke") {
    shown = state.strokes;
  } else if (!state.source) {
    shown = blank();
  } else if (task() === "super-resolve") { // the low-resolution input, enlarged
    const factor = Number($("factor").value), low = lowResolution(state.source, factor);
    shown = new Uint8ClampedArray(state.source.length);
    for (let i = 0; i < state.width * state.height; i++) {
      const x = Math.floor((i % state.width) / factor), y = Math.floor(Math.floor(i / state.width) / factor);
      shown.set(low.pixels.subarray(4 * (y * low.width + x), 4 * (y * low.width + x) + 4), 4 * i);
    }
  } else {
    shown = state.source.slice();
    if (task() === "inpaint") {
      state.mask.forEach((on, i) => {
        if (on) shown.set([255, Math.round(shown[4 * i + 1] * 0.3), Math.round(shown[4 * i + 2] * 0.3)], 4 * i);
      });
    }
  }
  context.putImageData(new ImageData(shown, state.width, state.height), 0, 0);
  $("brush-field").hidden = !["inpaint", "stroke"].includes(task());
  $("ink-field").hidden = task() !== "stroke";
  $("factor-field").hidden = task() !== "super-resolve";
  $("strokes-from-image").hidden = task() !== "stroke";
  $("canvas-caption").textContent = {
    "inpaint": state.source ? "brush the part to generate (red)" : "pick or upload an image first",
    "stroke": "draw strokes; each one updates the result",
    "super-resolve": state.source ? "the low-resolution input" : "pick or upload an image first",
    "colorize": state.source ? "the image (its grey version is the input)" : "pick or upload an image first",
  }[task()];
}

function changed(edit) {
  render();
  const ready = task() === "stroke" || (state.source && (task() !== "inpaint" || state.mask.some((v) => v)));
  if (edit && ready) requestEdit();
}

function editRequest() {
  const request = {task: task(), seed: Number($("edit-seed").value)};
  if ($("edit-steps").value) request.steps = Number($("edit-steps").value);
  if (state.model.num_classes) request.label = Number($("edit-label").value);
  if (state.model.guidance) request.guidance = Number($("edit-guidance").value);
  if (task() === "stroke") {
    request.image = pngOf(state.strokes);
  } else if (task() === "super-resolve") {
    request.factor = Number($("factor").value);
    const low = lowResolution(state.source, request.factor);
    request.image = pngOf(low.pixels, low.width, low.height);
  } else {
    request.image = pngOf(state.source);
  }
  if (task() === "inpaint") request.mask = pngOf(maskPixels());
  return request;
}

async function requestEdit() { // the newest state wins: strokes made during a request are sent right after it
  if (state.busy) { state.again = true; return; }
  if (task() !== "stroke" && !state.source) return;
  state.busy = true;
  $("edit-error").textContent = "";
  try {
    const result = await api("/api/edit", editRequest());
    state.lastEdit = result;
    state.edits += 1;
    const img = $("edit-result");
    img.src = result.image;
    img.dataset.settings = JSON.stringify(result.settings);
    img.dataset.count = String(state.edits);
    $("edit-time").textContent = `${ms(result.model_ms)} model · ${ms(result.request_ms)} request · ` +
      `${result.nfe} NFE · σ: ${sigmaText(result.sigmas)}`;
    $("edit-command").textContent = result.settings.command;
    $("edit-downloads").hidden = false;
    $("edit-mask").hidden = !result.settings.files["mask.png"];
  } catch (error) {
    $("edit-error").textContent = error.message;
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; requestEdit(); }
  }
}

function loadPixels(url, label) {
  const image = new Image();
  image.onload = () => {
    const canvas = document.createElement("canvas");
    canvas.width = state.width;
    canvas.height = state.height;
    const context = canvas.getContext("2d");
    context.fillStyle = "black";
    context.fillRect(0, 0, state.width, state.height);
    context.drawImage(image, 0, 0, state.width, state.height); // uploads of another size are resized here
    const pixels = context.getImageData(0, 0, state.width, state.height).data;
    if (state.channels === 1) { // a grey model takes grey images
      for (let i = 0; i < pixels.length; i += 4) {
        pixels.fill(Math.round(0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2]), i, i + 3);
      }
    }
    for (let i = 3; i < pixels.length; i += 4) pixels[i] = 255;
    state.source = pixels;
    state.mask.fill(0);
    $("held-out-note").textContent = label;
    changed(true);
  };
  image.onerror = () => { $("edit-error").textContent = "that file is not an image the browser can read"; };
  image.src = url;
}

async function pick(index) {
  $("edit-error").textContent = "";
  try {
    const held = await api(`/api/held-out/${index}`);
    $("held-out-index").value = held.index;
    loadPixels(held.image, `held-out image #${held.index} of ${held.count}` +
      (held.label === null ? "" : `, class ${held.label}`));
  } catch (error) {
    $("edit-error").textContent = error.message;
  }
}

function upload(event) {
  const file = event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => loadPixels(reader.result, `uploaded ${file.name}`);
  reader.readAsDataURL(file);
}

$("edit-png").addEventListener("click", () => download("result.png", state.lastEdit.image));
$("edit-json").addEventListener("click", () => download("settings.json", jsonURL(state.lastEdit.settings)));
$("edit-input").addEventListener("click", () => download("input.png", pngURL(state.lastEdit.settings.files["input.png"])));
$("edit-mask").addEventListener("click", () => download("mask.png", pngURL(state.lastEdit.settings.files["mask.png"])));

start().catch((error) => { $("model-info").textContent = "cannot reach the server: " + error.message; });
