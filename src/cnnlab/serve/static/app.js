// The drawing page: pointer events (mouse, touch and pen alike) draw black strokes on a white
// canvas (white on black for a net that reads images as they are and was trained on light marks on dark paper, as
// /info's "preparation" and "paper" say: an MNIST-as-PNG folder's net); while drawing, the canvas is sent as a PNG
// to POST /predict, at most one request in flight, and the answer updates the bars, the prediction and the 28x28
// image the net saw.
// An image file (the "Open an image" button, reachable by keyboard, a drop on the canvas or a
// paste) is sent as it is, and shown as it is. Undo (the button, Ctrl+Z or Cmd+Z) takes back the last stroke.
// A request has a time limit; no answer in it, no connection, a gateway's error or an answer that is not cnnlab's
// is an outage: the drawing is sent again later (the backoff below). So is a drawing refused because the net served
// is withdrawn (its run diverged), under the server's own line: answered once a net is put back.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const barsBox = document.getElementById("bars");
const predictionEl = document.getElementById("prediction");
const confidenceEl = document.getElementById("confidence");
const doubtEl = document.getElementById("doubt");
const statusEl = document.getElementById("status");
const seenEl = document.getElementById("seen");
const branchBox = document.getElementById("branches");
const branchBars = document.getElementById("branch-bars");
const undoButton = document.getElementById("undo");

// The net whose answers the page shows: /info's when it loads, then an answer's, when a server restarted on the
// same port serves another net (the bars, the header and the limits are then that net's).
let net = { model: null, dataset: null, classes: [], paper: null, preparation: null };
let limits = { max_upload_bytes: 4 << 20, max_pixels: 4096 * 4096 };  // the server's, from /info
let drawing = false;
let pen = null;          // the pointer drawing the stroke
let penType = "";        // its kind: "mouse", "pen" or "touch"
let inked = false;       // anything drawn since the last clear
let inFlight = false;    // a request is on its way
let dirty = false;       // the canvas changed since the last request was sent
let sends = 0;           // drawings sent so far: whether a stroke taken back had been sent
let generation = 0;      // bumped by Clear, Undo and an opened image: late answers for an old drawing are dropped
let updates = 0;
let darkPaper = false;   // white ink on a black canvas: what the net's training images were (setPaper)
let netNews = "";        // "the server now serves another net ...": said with the next answer shown (a net of the
                         // other paper turns the drawing's colours, and the answer for the old colours is dropped)

// A server that does not answer (stopped, restarting) is asked again after 1 s, then 2, 4, 8, and 10 s at most:
// one timer at a time, for one drawing (its generation); meanwhile send() leaves the server alone.
const RETRY_FIRST_MS = 1000, RETRY_MOST_MS = 10000;
let retryDelay = RETRY_FIRST_MS;
let retryTimer = null;

// A request unanswered this long is given up and sent again like an outage's: a server that takes connections but
// never answers (stopped with SIGSTOP, stuck) left the page waiting for ever, every later drawing held behind it. A
// prediction takes well under a second; an upload also gets its length at the least rate the server takes (app.py's
// DEFAULT_MIN_BODY_RATE, 16 KiB/s), so that a phone's 4 MiB photo on a slow link is not cut off.
const ANSWER_MS = 15000, LEAST_RATE = 16 * 1024;
let asking = null;       // the AbortController of the request in flight
const TIMED_OUT = "timed out", SUPERSEDED = "superseded";

// The opened image (Open an image, a drop, a paste) while it is the canvas's picture (Clear or another image forget
// it): what is sent for it (the file, or its scaled copy) and how it is shown. `untouched`: the canvas is that image
// and nothing drawn on it, so the file is sent (a retry, Undo back to it), never the canvas's copy of it.
let opened = null;       // { sent, name, note, layer }
let untouched = false;

// Undo: the canvas as it was before each stroke, the latest last; 30 at most (30 x 280 x 280 x 4 bytes: 9 MB).
const UNDO_DEPTH = 30;
let history = [];
let strokeStart = null;  // the state before the stroke being drawn, for a stroke taken back

function resetCanvas() {
  ctx.fillStyle = darkPaper ? "#000" : "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = darkPaper ? "#fff" : "#000";
  ctx.lineWidth = 20;       // about MNIST's stroke: 2 px of 28 after scaling a 200 px digit to 20 px
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
}

function bar(container, label, key) {
  const l = document.createElement("div");
  l.className = "label";
  l.textContent = label;
  l.title = label;  // a long name is cut short with an ellipsis (CSS): the whole name on hover
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
  classBars = net.classes.map((c) => bar(barsBox, c, "cls"));
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
  predictionEl.removeAttribute("title");
  confidenceEl.textContent = "";
  doubtEl.textContent = "";
  statusEl.textContent = "";
  seenEl.removeAttribute("src");
  classBars.forEach((b) => { b.fill.style.width = "0"; b.pct.textContent = "–"; b.row.forEach((el) => el.classList.remove("top")); });
  branchBox.hidden = true;
}

async function send() {
  if (inFlight || retryTimer || !dirty || !inked) return;  // a re-send is due: it takes the drawing as it is then
  inFlight = true;
  document.body.dataset.inflight = "1";  // for tests: whether an answer is awaited
  dirty = false;
  sends++;
  const mine = generation;
  const file = opened && untouched ? opened : null;  // the opened image as it is: its file, as 'cnnlab predict' has it
  imagePending = !!file;
  try {
    const blob = file ? file.sent : await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    await ask(blob, file ? file.name : "canvas.png", mine, () => { dirty = true; send(); }, file ? file.note : "");
  } finally {
    inFlight = false;
    document.body.dataset.inflight = "0";
    if (file && mine === generation && !retryTimer) imagePending = false;  // answered (a re-send due: still awaited)
    if (dirty) send();   // the drawing went on meanwhile: send the latest (inflight is "1" again at once)
  }
}

// A new drawing (Clear, Undo, another image, a stroke over an opened image): answers for the one before are dropped,
// and the request still on its way for it is given up, so that the new one is sent at once (one request in flight).
function supersede() {
  generation++;
  if (asking) asking.abort(SUPERSEDED);
}

// One re-send pending at most: a new one replaces it, and it fires only for the drawing it was set for.
function retryLater(ms, mine, again) {
  cancelRetry();
  retryTimer = setTimeout(() => { retryTimer = null; if (mine === generation) again(); }, ms);
}

function cancelRetry() {
  clearTimeout(retryTimer);
  retryTimer = null;
}

// POST one image to /predict and show the answer, unless Clear (or Undo, or another image) came meanwhile. No answer
// (the server stopped or restarting) or a busy one (503): `again` is called later. Showing the answer is kept apart
// from fetching it, so that a fault of this page's script is never reported as the server being out of reach.
async function ask(blob, name, mine, again, note = "") {
  const got = await post(blob, name);
  if (mine !== generation) return;
  const outage = unanswered(got);
  if (outage) { waitForServer(outage, mine, again); return; }
  if (!got.res.ok) { refused(got.res, got.body, mine, again); return; }
  retryDelay = RETRY_FIRST_MS;  // cnnlab answers again
  try {
    if (!sameNet(got.body)) netNews = await switchNet(got.body) || netNews;
    if (mine === generation) showAnswer(got.body, note);
  } catch (err) {
    clearResults();
    statusEl.textContent = "this page could not show the server's answer (" + (err.message || err)
      + "); reload the page";
  }
}

// The server's answer as { res, body, foreign }, or { error } when none came (not reached, the connection lost
// mid-answer, no answer in time: error.timedOut, its seconds). `foreign`: what is wrong with an answer that is not
// cnnlab's ("" for one that is).
async function post(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const patience = ANSWER_MS + 1000 * blob.size / LEAST_RATE;
  const abort = asking = new AbortController();
  const timer = setTimeout(() => abort.abort(TIMED_OUT), patience);
  try {
    const res = await fetch("/predict", { method: "POST", body: form, signal: abort.signal });
    return { res, ...parsed(await res.text(), res) };  // the time limit covers the body too
  } catch (err) {
    return { error: abort.signal.reason === TIMED_OUT ? { timedOut: Math.round(patience / 1000) } : err };
  } finally {
    clearTimeout(timer);
    if (asking === abort) asking = null;
  }
}

// An answer's JSON, and what is wrong with it when it is not cnnlab's (another program on the port, a proxy's error
// page: HTML, an empty body): cnnlab answers with probabilities and classes, or refuses with {"error": "..."}.
// Such an answer threw "Cannot read properties of undefined (reading 'length')", and the drawing was never sent again.
function parsed(text, res) {
  let body;
  try { body = JSON.parse(text); } catch (err) {
    const type = (res.headers.get("Content-Type") || "no Content-Type").split(";")[0];
    return { body: {}, foreign: text.trim() ? "not JSON but " + type : "an empty body" };
  }
  if (body === null || typeof body !== "object") return { body: {}, foreign: "JSON that is no object" };
  const ours = res.ok ? Array.isArray(body.probabilities) && Array.isArray(body.classes)
    : typeof body.error === "string";
  return { body, foreign: ours ? "" : res.ok ? "JSON without probabilities and classes" : "JSON without an error" };
}

// Why no answer of cnnlab's came, for the drawing to be sent again later (waitForServer), or "" when one did: no
// connection, none in time, a failed server's or a gateway's error (500, 502, 504; a 503 but cnnlab's own, which
// says when to retry, or that its net is withdrawn: refused), or an answer that is not cnnlab's.
function unanswered(got) {
  if (got.error && got.error.timedOut) {
    return "the cnnlab server is not answering: nothing came back in " + got.error.timedOut + " s (is it stopped, "
      + "or stuck?)";
  }
  if (got.error) {
    return "cannot reach the cnnlab server: is 'cnnlab serve' still running? (" + (got.error.message || got.error)
      + ")";
  }
  const { res, body, foreign } = got;
  if (res.status === 503 && (res.headers.get("Retry-After") || body.withdrawn) && !foreign) return "";
  if ([500, 502, 503, 504].includes(res.status)) {
    return "error " + res.status + " from the server on this port" + (body.error ? " (" + body.error + ")" : "");
  }
  if (foreign) {
    return "the server on this port did not answer as cnnlab does (status " + res.status + ", " + foreign + ")";
  }
  return "";
}

// cnnlab's refusal: its line alone. A busy server's 503 (Retry-After): the drawing is sent again after the wait it
// asks for. A withdrawn net's 503 (its run diverged: "withdrawn", no Retry-After) is no outage, and no wait mends it
// (the page said "error 503 from the server on this port (...). Waiting for it"); the net put back (retrained) does,
// which the server sees at the next request: the drawing is sent again with the outage's backoff, and the line says so.
function refused(res, body, mine, again) {
  clearResults();  // no answer for this drawing: the last one's must not stand beside the error as its answer
  statusEl.textContent = body.error || ("error " + res.status);
  if (res.status === 503 && body.withdrawn) {
    const wait = backoff();
    statusEl.textContent += ". This drawing is sent again when the server answers with a net again (next try in "
      + wait / 1000 + " s)";
    retryLater(wait, mine, again);
    return;
  }
  retryDelay = RETRY_FIRST_MS;  // cnnlab answers
  if (res.status === 503) {  // the server is busy: send it again after the wait it asks for
    retryLater(1000 * (Number(res.headers.get("Retry-After")) || 1), mine, again);
  }
}

// No answer of cnnlab's (`why`, unanswered's): the same drawing is sent again, later each time, while it stays the
// canvas's drawing, so that a server started again (or freed, or back behind its proxy) answers it, no new stroke.
function waitForServer(why, mine, again) {
  clearResults();
  const wait = backoff();
  statusEl.textContent = why + ". Waiting for it: trying again in " + wait / 1000 + " s";
  retryLater(wait, mine, again);
}

// The wait before the next re-send: 1 s, then twice the last, 10 s at most, until cnnlab answers.
function backoff() {
  const wait = retryDelay;
  retryDelay = Math.min(2 * retryDelay, RETRY_MOST_MS);
  return wait;
}

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// What names a net, beside its classes, in /info and in each answer. The paper too: two folder runs of one model,
// dataset name and classes, one trained on dark paper and one on light, need the other canvas.
const NET_KEYS = ["model", "dataset", "paper", "preparation"];

// Whether an answer comes from the net the page shows: a server restarted on the same port with another net
// answers for classes the bars were not built for (a Fashion-MNIST answer under the digits' bars, 12 classes
// against 10 bars). What an answer does not name is not compared.
function sameNet(body) {
  return sameList(body.classes, net.classes) && NET_KEYS.every((k) => body[k] === undefined || body[k] === net[k]);
}

// Another net answers: its classes become the bars; the header is /info's when /info names the same net (it also
// brings the limits), else the answer's own. Returns the line saying so: none when the page knew of no net before
// (its /info at load not read), or when the net it shows is the answer's by the time /info came (the page's first
// /info, slow, came meanwhile: "the server now serves another net" was said of the net served from the start).
async function switchNet(body) {
  const known = net.model !== null;  // null: /info was not read at load, so nothing changed that the page knew of
  let info = null;
  try { info = await readInfo(); } catch (err) { /* the answer names the net */ }
  if (sameNet(body)) return "";  // shown meanwhile (init's /info): no news, and nothing to switch
  const agrees = info && Array.isArray(info.classes) && sameList(info.classes, body.classes)
    && NET_KEYS.every((k) => body[k] === undefined || info[k] === body[k]);
  const now = agrees ? info : { model: body.model, dataset: body.dataset, paper: body.paper,
                                preparation: body.preparation, classes: body.classes, inception: !!body.branches };
  const paperNews = now.paper !== net.paper && now.preparation === "as is"
    ? ", its training images on " + now.paper + " paper" : "";
  showNet(now);
  return known ? "the server now serves another net: " + describe(now) + ", " + now.classes.length + " classes"
    + paperNews : "";
}

// /info, within the answer's time limit (a server that never answers must not hold the page).
async function readInfo() {
  return (await fetch("/info", { signal: AbortSignal.timeout(ANSWER_MS) })).json();
}

function describe(info) {
  return "model " + info.model + (info.inception ? " (Inception)" : "")
    + (info.dataset ? ", trained on " + info.dataset : "");
}

// The header, the bars and the limits for the net `info` names (/info's fields).
function showNet(info) {
  net = { model: info.model, dataset: info.dataset, classes: info.classes, paper: info.paper,
          preparation: info.preparation };
  limits = { max_upload_bytes: info.max_upload_bytes || limits.max_upload_bytes,
             max_pixels: info.max_pixels || limits.max_pixels };
  const digits = net.classes.join("") === "0123456789";
  const what = info.dataset === "fashion-mnist" ? "an item of clothing" : digits ? "a digit" : "one of its classes";
  document.getElementById("what").textContent = "Draw " + what;
  document.title = "cnnlab: draw " + what;
  document.getElementById("model").textContent = info.model ? "· " + describe(info) : "";
  document.getElementById("class-count").textContent = String(net.classes.length);
  buildBars();
  setPaper(info.preparation === "as is" && info.paper === "dark");
}

// The canvas's paper: black for a net that reads images as they are (an image folder's) and was trained on light marks
// on dark paper, so that what is drawn is what it was trained on (a white canvas's black 7 read "0" on an MNIST-as-PNG
// net), and the canvas saved reads the same through 'cnnlab predict'; white for every other (the digits' and clothes'
// steps find the ink either way). What is drawn keeps its ink: the canvas and Undo's snapshots turn to the new colours.
// An opened image is not the page's drawing: never inverted (a black-on-white photo opened while the server was down
// was turned white on black by a dark-paper net's answer, and that copy sent: "3" where the file reads "0" with a note
// to invert it). Untouched, it is shown again on the new paper (its file is what is sent, and answered); with strokes
// on it, the canvas stays as it is.
function setPaper(dark) {
  if (dark === darkPaper) return;
  darkPaper = dark;
  pad.classList.toggle("dark-paper", dark);
  ctx.strokeStyle = dark ? "#fff" : "#000";
  if (opened) { if (untouched) showOpened(); return; }
  const now = ctx.getImageData(0, 0, pad.width, pad.height);
  [now, ...history.map((h) => h.image)].forEach(invertImage);
  ctx.putImageData(now, 0, 0);
  if (inked) drawingChanged();  // the drawing in the new colours is sent; an answer for the old is dropped
}

function invertImage(image) {
  const d = image.data;
  for (let i = 0; i < d.length; i += 4) { d[i] = 255 - d[i]; d[i + 1] = 255 - d[i + 1]; d[i + 2] = 255 - d[i + 2]; }
}

// The news of another net stays up for a while: the answers that follow while the user draws on (one every stroke)
// would otherwise wipe it within a second.
const NEWS_MS = 8000;
let news = { text: "", until: 0 };

function showAnswer(body, note = "") {
  if (netNews) news = { text: netNews, until: Date.now() + NEWS_MS };
  netNews = "";
  statusEl.textContent = Date.now() < news.until ? news.text : "";
  showProbabilities(body.probabilities);
  const top = body.top[0];
  predictionEl.textContent = body.prediction;
  predictionEl.title = body.prediction;  // a long class name is cut short (CSS): the whole name on hover
  confidenceEl.textContent = (100 * top.probability).toFixed(1) + "% sure" + (body.number
    ? " (" + body.digits_seen + " digits side by side, one at a time they read " + body.number.number + ", "
      + (100 * body.number.probability).toFixed(1) + "% sure)" : "") + note;
  // a small digit drawn with this broad pen: its strokes come out far wider than MNIST's, and the net misreads most
  const doubts = [];
  if (body.thick_strokes) {
    doubts.push("Its strokes are " + body.thick_strokes.toFixed(1) + " px wide in the 28x28 input, wider than almost "
      + "any MNIST digit's (under 4.5 px): the net often misreads such digits. Draw it larger.");
  }
  // an image read as it is, on the other paper than the net's training images (an opened photo, black on white)
  if (body.image_paper) {
    const marks = body.image_paper === "light" ? "light marks on dark" : "dark marks on light";
    doubts.push("The image is mostly " + body.image_paper + ", where the net's training images were " + marks
      + " paper; this net reads images as they are, nothing is inverted: if its marks are the ink, invert it.");
  }
  doubtEl.textContent = doubts.join(" ");
  seenEl.src = body.input_png;
  showBranches(body.branches);
  document.body.dataset.updates = String(++updates);
}

// An image file (chosen with the keyboard or the mouse, dropped on the canvas or pasted): the file itself is
// sent, as 'cnnlab predict FILE' reads it, and shown on the canvas, where strokes drawn on it are sent as a drawing
// (the image's own answer, if it comes later, is then dropped: it is no longer what the canvas shows).
let imagePending = false;  // an opened image's answer is awaited (in flight, or a re-send due)
async function openImage(file) {
  if (!file) return;
  supersede();  // a drawing's (or an earlier image's) late answer must not land on this image
  const mine = generation;
  cancelRetry();
  inked = dirty = untouched = false;
  opened = null;
  forgetStrokes();
  resetCanvas();
  clearResults();
  const name = file.name || "image";
  let data;
  try { data = await inMemory(file); } catch (err) {
    if (mine === generation) statusEl.textContent = "could not read " + name + " (" + (err.message || err) + "); "
      + "open it again";
    return;
  }
  let bitmap = null;
  try { bitmap = await createImageBitmap(data); } catch (err) {
    // a format the browser cannot show (TIFF...): the server still reads it, or says what is wrong
  }
  const [sent, note] = await fitted(data, bitmap);
  const layer = bitmap ? layerOf(bitmap) : null;
  if (bitmap) bitmap.close();
  if (mine !== generation) return;  // Clear, or another image, came meanwhile
  opened = { sent, name, note, layer };
  showOpened();
  inked = dirty = untouched = true;
  send();
}

// The file's bytes, read once into memory when it is opened: what is sent for it later (Undo back to it, a re-send
// after an outage) is what was opened. A chosen or dropped file is read from the disk at each upload: saved again or
// moved meanwhile, Chromium refused its upload (ERR_UPLOAD_FILE_CHANGED), which the page took for the server out of
// reach, sent again for ever.
async function inMemory(file) {
  return new Blob([await file.arrayBuffer()], { type: file.type });
}

// The image scaled into the canvas and centred, on a clear canvas of its own: kept while it is open, to show it
// again (Undo back to it, the other paper). `opacityInk`: its opacity varies (strokes on a clear background), as
// cnnlab's preprocessing.alpha_is_ink tells (some of it under 0.99 opaque, 0.25 between least and most), where
// the digits' steps read that opacity as the ink, whatever its colour.
function layerOf(bitmap) {
  const canvas = document.createElement("canvas");
  canvas.width = pad.width;
  canvas.height = pad.height;
  const g = canvas.getContext("2d", { willReadFrequently: true });
  const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
  const w = Math.max(1, Math.round(bitmap.width * scale)), h = Math.max(1, Math.round(bitmap.height * scale));
  const x = Math.floor((pad.width - w) / 2), y = Math.floor((pad.height - h) / 2);
  g.drawImage(bitmap, x, y, w, h);
  const d = g.getImageData(x, y, w, h).data;
  let least = 255, most = 0;
  for (let i = 3; i < d.length; i += 4) { least = Math.min(least, d[i]); most = Math.max(most, d[i]); }
  return { canvas, opacityInk: least < 0.99 * 255 && most - least >= 0.25 * 255 };
}

// The opened image on the canvas's paper, as it is; one whose opacity is its ink shows that opacity in the pen's
// colour (white strokes on a clear background vanished on the white canvas, and the canvas sent after Undo back to
// it had "no ink"). A transparent image is drawn over the paper, never the paper over it.
function showOpened() {
  resetCanvas();
  if (!opened.layer) return;
  let picture = opened.layer.canvas;
  if (opened.layer.opacityInk) {
    picture = document.createElement("canvas");
    picture.width = pad.width;
    picture.height = pad.height;
    const g = picture.getContext("2d");
    g.drawImage(opened.layer.canvas, 0, 0);
    g.globalCompositeOperation = "source-in";  // the pen's colour, as opaque as the image is at each pixel
    g.fillStyle = ctx.strokeStyle;
    g.fillRect(0, 0, pad.width, pad.height);
  }
  ctx.drawImage(picture, 0, 0);
}

// The file as it is, or, when it is over the server's limits (a phone's photo of 5 MB against the 4 MiB upload
// limit), the picture scaled to at most 1024 px a side, the size cnnlab's preprocessing reduces larger images to
// anyway, and within the server's pixel limit (`serve --max-pixels 262144`: 512x512; a 600x600 image was "scaled"
// to itself, and a 2000x2000 one to 1024x1024, both refused): PNG (its transparency kept: a transparent image's
// opacity is its ink), then smaller, then JPEG on white. The answer then says it is the scaled copy's. A file the
// browser cannot decode is sent as it is.
async function fitted(file, bitmap) {
  const room = limits.max_upload_bytes - 4096;  // the form's own bytes around the file
  const { width: w, height: h } = bitmap || {};
  if (!bitmap || (file.size <= room && w * h <= limits.max_pixels)) return [file, ""];
  const most = Math.sqrt(limits.max_pixels / (w * h));  // the scale whose copy holds the pixels the server takes
  for (const [side, type] of [[1024, "image/png"], [512, "image/png"], [1024, "image/jpeg"], [512, "image/jpeg"]]) {
    const scale = Math.min(1, side / Math.max(w, h), most);
    const c = document.createElement("canvas");
    c.width = Math.max(1, Math.floor(w * scale));
    c.height = Math.max(1, Math.floor(h * scale));
    const g = c.getContext("2d");
    if (type === "image/jpeg") { g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height); }  // JPEG has no alpha
    g.drawImage(bitmap, 0, 0, c.width, c.height);
    const blob = await new Promise((resolve) => c.toBlob(resolve, type, 0.92));
    if (blob && blob.size <= room && c.width * c.height <= limits.max_pixels) {
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

// Strokes. Only the primary button draws (a right-drag drew over a digit; a context-menu click left a dot), and only
// the primary finger or pen; a second pointer arriving during a stroke (a pinch) takes that stroke back.
pad.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  if (drawing) {
    // a hand resting on the screen while a stylus draws is a palm, ignored
    if (ev.pointerId === pen || (penType === "pen" && ev.pointerType === "touch")) return;
    // a stylus landing while a touch draws: the touch was a palm that came first (a resting hand lands before the
    // pen), taken back, and the pen draws (its whole stroke was lost, taken for a pinch); a second finger, a pinch
    const palm = penType === "touch" && ev.pointerType === "pen";
    takeBackStroke();
    if (!palm) return;
  }
  if (!ev.isPrimary || ev.button !== 0) return;
  startStroke(ev);
});
pad.addEventListener("pointermove", (ev) => {
  if (!drawing || ev.pointerId !== pen) return;
  // the primary button let go while another is held (a chord) brings no pointerup: the stroke ends there (it went on
  // drawing wherever the right button was dragged)
  if (penType === "mouse" && (ev.buttons & 1) === 0) { endStroke(ev); return; }
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

function startStroke(ev) {
  // `settled`: the answer shown is the drawing's, none awaited by a re-send due or an opened image
  strokeStart = { dirty, sends, settled: !retryTimer && !imagePending };
  if (imagePending) { supersede(); imagePending = false; }  // an opened image's answer: no longer the canvas's
  cancelRetry();  // this stroke is sent as it is drawn: a re-send of the drawing before it is superseded
  remember();
  untouched = false;  // strokes on an opened image: the canvas is sent from now on
  pad.setPointerCapture(ev.pointerId);
  drawing = true;
  pen = ev.pointerId;
  penType = ev.pointerType;
  const [x, y] = point(ev);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + 0.01, y);   // a dot for a tap
  ctx.stroke();
  inked = dirty = true;
}

// The stroke being drawn is undone: the canvas goes back to how it was before it, and is sent again unless the
// answer shown is already that drawing's (nothing of the stroke sent, and no answer awaited when it began).
function takeBackStroke() {
  drawing = false;
  pen = null;
  restore(history.pop());
  showUndo();
  if (sends !== strokeStart.sends || !strokeStart.settled) { drawingChanged(); return; }
  dirty = strokeStart.dirty;
}

// The snapshots for Undo: ImageData copies of the canvas, with whether it held ink and whether it was the opened
// image untouched (shown again from the image, on today's paper, and its file sent: the canvas's copy of a
// transparent image was "no ink found").
function remember() {
  history.push({ image: ctx.getImageData(0, 0, pad.width, pad.height), inked, untouched });
  if (history.length > UNDO_DEPTH) history.shift();
  showUndo();
}

function restore(snapshot) {
  untouched = snapshot.untouched && opened !== null;
  if (untouched) showOpened(); else ctx.putImageData(snapshot.image, 0, 0);
  inked = snapshot.inked;
}

// Clear, or an opened image: nothing to undo, and the stroke being drawn, if any, ends there.
function forgetStrokes() {
  drawing = false;
  pen = null;
  history = [];
  showUndo();
}

function showUndo() {
  undoButton.disabled = history.length === 0;
}

// The canvas went back to an earlier drawing (Undo, a stroke taken back): an answer on its way is for another
// drawing and is dropped, as after Clear; the drawing is sent, or the results cleared when nothing is left.
function drawingChanged() {
  supersede();
  imagePending = false;
  cancelRetry();
  if (!inked) { dirty = false; clearResults(); return; }
  dirty = true;
  send();
}

function undo() {
  if (drawing) { takeBackStroke(); return; }
  if (!history.length) return;
  restore(history.pop());
  showUndo();
  drawingChanged();
}

undoButton.addEventListener("click", undo);
document.addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && !ev.shiftKey && !ev.altKey && ev.key.toLowerCase() === "z") {
    ev.preventDefault();
    undo();
  }
});

const fileInput = document.getElementById("file");
fileInput.addEventListener("change", () => { openImage(fileInput.files[0]); fileInput.value = ""; });
pad.addEventListener("dragover", (ev) => ev.preventDefault());
pad.addEventListener("drop", (ev) => { ev.preventDefault(); openImage(ev.dataTransfer.files[0]); });
document.addEventListener("paste", (ev) => {
  const file = [...(ev.clipboardData ? ev.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
  if (file) { ev.preventDefault(); openImage(file); }
});

document.getElementById("clear").addEventListener("click", () => {
  news = { text: "", until: 0 };  // said: a new drawing starts without it
  supersede();
  cancelRetry();
  imagePending = false;
  inked = dirty = untouched = false;
  opened = null;
  forgetStrokes();
  resetCanvas();
  clearResults();
});

async function init() {
  resetCanvas();
  try {
    showNet(await readInfo());
  } catch (err) {
    // the digits' bars until an answer names the net (it differs from this unnamed one: /info is read again then)
    showNet({ model: null, dataset: null, classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"] });
    statusEl.textContent = "could not read /info: " + err;
  }
  document.body.dataset.ready = "1";
}
init();
