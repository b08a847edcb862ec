// The drawing page: pointer events (mouse, touch and pen alike) draw black strokes on a white
// canvas; while drawing, the canvas is sent as a PNG to POST /predict, at most one request in
// flight, and the answer updates the bars, the prediction and the 28x28 image the net saw.
// An image file (the "Open an image" button, reachable by keyboard, a drop on the canvas or a
// paste) is sent as it is.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const barsBox = document.getElementById("bars");
const predictionEl = document.getElementById("prediction");
const confidenceEl = document.getElementById("confidence");
const statusEl = document.getElementById("status");
const seenEl = document.getElementById("seen");
const branchBox = document.getElementById("branches");
const branchBars = document.getElementById("branch-bars");

let classes = [];
let limits = { max_upload_bytes: 4 << 20, max_pixels: 4096 * 4096 };  // the server's, from /info
let drawing = false;
let pen = null;          // the pointer drawing the stroke: a second finger or a palm on a touch screen is ignored
let inked = false;       // anything drawn since the last clear
let inFlight = false;    // a request is on its way
let dirty = false;       // the canvas changed since the last request was sent
let generation = 0;      // bumped by Clear: late answers for an old drawing are dropped
let updates = 0;

function resetCanvas() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 20;       // about MNIST's stroke: 2 px of 28 after scaling a 200 px digit to 20 px
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
}

function bar(container, label, key) {
  const l = document.createElement("div");
  l.className = "label";
  l.textContent = label;
  const track = document.createElement("div");
  track.className = "track";
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.dataset[key] = label;
  track.appendChild(fill);
  const pct = document.createElement("div");
  pct.className = "pct";
  pct.textContent = "–";
  container.append(l, track, pct);
  return { row: [l, track, pct], fill, pct };
}

let classBars = [];
function buildBars() {
  barsBox.textContent = "";
  classBars = classes.map((c) => bar(barsBox, c, "cls"));
}

function showProbabilities(probs) {
  const best = probs.indexOf(Math.max(...probs));
  probs.forEach((p, i) => {
    const b = classBars[i];
    b.fill.style.width = (100 * p).toFixed(1) + "%";
    b.pct.textContent = (100 * p).toFixed(1) + "%";
    b.row.forEach((el) => el.classList.toggle("top", i === best));
  });
}

function showBranches(branches) {
  if (!branches) { branchBox.hidden = true; return; }
  branchBox.hidden = false;
  branchBars.textContent = "";
  for (const [module, share] of Object.entries(branches.share)) {
    const box = document.createElement("div");
    box.className = "module";
    const title = document.createElement("div");
    title.textContent = module;
    const grid = document.createElement("div");
    grid.className = "bars";
    box.append(title, grid);
    for (const [branch, s] of Object.entries(share)) {
      const b = bar(grid, branch, "branch");
      b.fill.style.width = (100 * s).toFixed(1) + "%";
      b.pct.textContent = (100 * s).toFixed(1) + "%";
    }
    branchBars.appendChild(box);
  }
}

function clearResults() {
  predictionEl.textContent = "";
  confidenceEl.textContent = "";
  statusEl.textContent = "";
  seenEl.removeAttribute("src");
  classBars.forEach((b) => { b.fill.style.width = "0"; b.pct.textContent = "–"; b.row.forEach((el) => el.classList.remove("top")); });
  branchBox.hidden = true;
}

async function send() {
  if (inFlight || !dirty || !inked) return;
  inFlight = true;
  document.body.dataset.inflight = "1";  // for tests: whether an answer is awaited
  dirty = false;
  const mine = generation;
  try {
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    await ask(blob, "canvas.png", mine, () => { dirty = true; send(); });
  } finally {
    inFlight = false;
    document.body.dataset.inflight = "0";
    if (dirty) send();   // the drawing went on meanwhile: send the latest (inflight is "1" again at once)
  }
}

// POST one image to /predict and show the answer, unless Clear (or another image) came meanwhile; on a busy
// server (503) `again` is called after the wait it asks for.
async function ask(blob, name, mine, again, note = "") {
  try {
    const form = new FormData();
    form.append("file", blob, name);
    const res = await fetch("/predict", { method: "POST", body: form });
    const body = await res.json();
    if (mine !== generation) return;
    if (!res.ok) {
      clearResults();  // no answer for this drawing: the last one's must not stand beside the error as its answer
      statusEl.textContent = body.error || ("error " + res.status);
      if (res.status === 503) {  // the server is busy: send it again after the wait it asks for
        const wait = 1000 * (Number(res.headers.get("Retry-After")) || 1);
        setTimeout(() => { if (mine === generation) again(); }, wait);
      }
      return;
    }
    showAnswer(body, note);
  } catch (err) {
    if (mine !== generation) return;
    clearResults();
    statusEl.textContent = "cannot reach the cnnlab server: is 'cnnlab serve' still running? (" + (err.message || err) + ")";
  }
}

function showAnswer(body, note = "") {
  statusEl.textContent = "";
  showProbabilities(body.probabilities);
  const top = body.top[0];
  predictionEl.textContent = body.prediction;
  confidenceEl.textContent = (100 * top.probability).toFixed(1) + "% sure" + (body.number
    ? " (" + body.digits_seen + " digits side by side, one at a time they read " + body.number.number + ", "
      + (100 * body.number.probability).toFixed(1) + "% sure)" : "") + note;
  seenEl.src = body.input_png;
  showBranches(body.branches);
  document.body.dataset.updates = String(++updates);
}

// An image file (chosen with the keyboard or the mouse, dropped on the canvas or pasted): the file itself is
// sent, as 'cnnlab predict FILE' reads it, and shown on the canvas, where strokes drawn on it are sent as a drawing
// (the image's own answer, if it comes later, is then dropped: it is no longer what the canvas shows).
let imagePending = false;  // an opened image's answer is awaited
async function openImage(file) {
  if (!file) return;
  const mine = ++generation;  // a drawing's (or an earlier image's) late answer must not land on this image
  inked = dirty = false;
  resetCanvas();
  clearResults();
  let bitmap = null;
  try { bitmap = await createImageBitmap(file); } catch (err) {
    // a format the browser cannot show (TIFF...): the server still reads it, or says what is wrong
  }
  if (mine !== generation) { if (bitmap) bitmap.close(); return; }  // Clear, or another image, came meanwhile
  if (bitmap) {
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }
  inked = true;
  imagePending = true;
  document.body.dataset.inflight = "1";
  const [sent, note] = await fitted(file, bitmap);
  if (bitmap) bitmap.close();
  if (mine === generation) await ask(sent, file.name || "image", mine, () => openImage(file), note);
  if (mine === generation) imagePending = false;
  document.body.dataset.inflight = inFlight ? "1" : "0";
}

// The file as it is, or, when it is over the server's limits (a phone's photo of 5 MB against the 4 MiB upload
// limit), the picture scaled to at most 1024 px a side, the size cnnlab's preprocessing reduces larger images to
// anyway: PNG (its transparency kept: a transparent image's opacity is its ink), then smaller, then JPEG on white.
// The answer then says it is the scaled copy's. A file the browser cannot decode is sent as it is.
async function fitted(file, bitmap) {
  const room = limits.max_upload_bytes - 4096;  // the form's own bytes around the file
  if (!bitmap || (file.size <= room && bitmap.width * bitmap.height <= limits.max_pixels)) return [file, ""];
  for (const [side, type] of [[1024, "image/png"], [512, "image/png"], [1024, "image/jpeg"], [512, "image/jpeg"]]) {
    const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
    const c = document.createElement("canvas");
    c.width = Math.max(1, Math.round(bitmap.width * scale));
    c.height = Math.max(1, Math.round(bitmap.height * scale));
    const g = c.getContext("2d");
    if (type === "image/jpeg") { g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height); }  // JPEG has no alpha
    g.drawImage(bitmap, 0, 0, c.width, c.height);
    const blob = await new Promise((resolve) => c.toBlob(resolve, type, 0.92));
    if (blob && blob.size <= room) {
      return [blob, " (read from a copy scaled to " + c.width + "x" + c.height + ": the file is over the server's "
        + "limits, " + (limits.max_upload_bytes >> 20) + " MiB, " + limits.max_pixels.toLocaleString("en") + " pixels)"];
    }
  }
  return [file, ""];  // too large even so: the server says so
}

function point(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
}

pad.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  if (drawing) return;   // another finger while one draws: its line would join the stroke
  if (imagePending) { generation++; imagePending = false; }  // an opened image's answer: no longer the canvas's
  pad.setPointerCapture(ev.pointerId);
  drawing = true;
  pen = ev.pointerId;
  const [x, y] = point(ev);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + 0.01, y);   // a dot for a tap
  ctx.stroke();
  inked = dirty = true;
});
pad.addEventListener("pointermove", (ev) => {
  if (!drawing || ev.pointerId !== pen) return;
  ev.preventDefault();
  const [x, y] = point(ev);
  ctx.lineTo(x, y);
  ctx.stroke();
  inked = dirty = true;
  send();
});
function endStroke(ev) {
  if (!drawing || ev.pointerId !== pen) return;
  drawing = false;
  pen = null;
  send();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

const fileInput = document.getElementById("file");
fileInput.addEventListener("change", () => { openImage(fileInput.files[0]); fileInput.value = ""; });
pad.addEventListener("dragover", (ev) => ev.preventDefault());
pad.addEventListener("drop", (ev) => { ev.preventDefault(); openImage(ev.dataTransfer.files[0]); });
document.addEventListener("paste", (ev) => {
  const file = [...(ev.clipboardData ? ev.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
  if (file) { ev.preventDefault(); openImage(file); }
});

document.getElementById("clear").addEventListener("click", () => {
  generation++;
  imagePending = false;
  inked = dirty = false;
  resetCanvas();
  clearResults();
});

async function init() {
  resetCanvas();
  try {
    const info = await (await fetch("/info")).json();
    classes = info.classes;
    limits = { max_upload_bytes: info.max_upload_bytes || limits.max_upload_bytes,
               max_pixels: info.max_pixels || limits.max_pixels };
    const digits = classes.join("") === "0123456789";
    const what = info.dataset === "fashion-mnist" ? "an item of clothing" : digits ? "a digit" : "one of its classes";
    document.getElementById("what").textContent = "Draw " + what;
    document.title = "cnnlab: draw " + what;
    document.getElementById("model").textContent = "· model " + info.model + (info.inception ? " (Inception)" : "")
      + (info.dataset ? ", trained on " + info.dataset : "");
  } catch (err) {
    classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    statusEl.textContent = "could not read /info: " + err;
  }
  buildBars();
  document.body.dataset.ready = "1";
}
init();
