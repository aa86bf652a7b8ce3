// Demo page for the resumable upload handler: resumable.js or flow.js, unmodified, behind one small
// adapter so the page logic is the same for both. Settings come from the URL so a configuration can
// be shared (and the browser tests can pick chunk sizes): ?client=flow&method=octet&chunkSize=65536
// &forceChunkSize=1&simultaneousUploads=3&maxChunkRetries=5&chunkRetryInterval=200&testChunks=0.
"use strict";

const params = new URLSearchParams(location.search);
const settings = {
  client: params.get("client") === "flow" ? "flow" : "resumable",
  method: params.get("method") === "octet" ? "octet" : "multipart",
};

/** Library options: the library's own defaults unless the URL says otherwise. */
function libraryOptions() {
  const options = { target: "/upload", method: settings.method };
  for (const name of ["chunkSize", "simultaneousUploads", "maxChunkRetries", "chunkRetryInterval"]) {
    const text = params.get(name);
    if (text !== null && text !== "" && Number.isFinite(Number(text))) options[name] = Number(text);
  }
  for (const name of ["forceChunkSize", "testChunks"]) {
    const text = params.get(name);
    if (text !== null) options[name] = text === "1" || text === "true";
  }
  return options;
}

/** Size of the first chunk, as both libraries compute it (docs/protocol.md §5). */
function firstChunkSize(size, chunkSize, force) {
  const count = Math.max((force ? Math.ceil : Math.floor)(size / chunkSize), 1);
  return count === 1 && !force ? size : Math.min(size, chunkSize);
}

/** The same operations on either library. `lib` stays reachable for anyone poking at it. */
function createClient(kind, options) {
  if (kind === "flow") {
    const flow = new Flow(options);
    return {
      kind,
      lib: flow,
      supported: flow.support,
      addFiles: (files) => flow.addFiles(files),
      drop: (event) => flow.onDrop(event),
      onAdded: (callback) =>
        flow.on("filesSubmitted", (files) => {
          files.forEach(callback);
          flow.upload();
        }),
      on: (event, callback) => flow.on(event, callback),
      progress: (file) => file.progress(),
      failed: (file) => file.error,
      pause: (file) => file.pause(),
      resume: (file) => file.resume(),
      cancel: (file) => file.cancel(),
      retry: (file) => file.retry(),
      forget: (file) => flow.removeFile(file),
      statusQuery(file) {
        const o = flow.opts;
        return {
          flowChunkNumber: 1,
          flowChunkSize: o.chunkSize,
          flowCurrentChunkSize: firstChunkSize(file.size, o.chunkSize, o.forceChunkSize),
          flowTotalSize: file.size,
          flowIdentifier: file.uniqueIdentifier,
          flowFilename: file.name,
          flowRelativePath: file.relativePath,
          flowTotalChunks: Math.max(file.chunks.length, 1),
        };
      },
    };
  }
  const r = new Resumable(options);
  const uploading = (file) => file.chunks.filter((chunk) => chunk.status() === "uploading").length;
  // resumable.js runs `simultaneousUploads` chains of uploadNextChunk calls; aborting a chunk ends
  // its chain, so pausing one file would otherwise slow every other file down.
  const refill = () => {
    const busy = r.files.reduce((sum, file) => sum + uploading(file), 0);
    for (let i = busy; i < r.getOpt("simultaneousUploads"); i++) r.uploadNextChunk();
  };
  return {
    kind,
    lib: r,
    supported: r.support,
    addFiles: (files) => r.addFiles(files),
    drop: (event) => r.handleDropEvent(event),
    onAdded: (callback) =>
      r.on("filesAdded", (files) => {
        files.forEach(callback);
        r.upload();
      }),
    on: (event, callback) => r.on(event, callback),
    progress: (file) => file.progress(),
    // A failed chunk makes resumable.js report the file as 100% done.
    failed: (file) => file.chunks.some((chunk) => chunk.status() === "error"),
    pause(file) {
      file.pause(true);
      file.abort();
      refill();
    },
    resume(file) {
      file.pause(false);
      refill();
    },
    cancel: (file) => file.cancel(),
    retry: (file) => file.retry(),
    forget: (file) => r.removeFile(file),
    statusQuery(file) {
      const chunkSize = r.getOpt("chunkSize");
      return {
        resumableChunkNumber: 1,
        resumableChunkSize: chunkSize,
        resumableCurrentChunkSize: firstChunkSize(file.size, chunkSize, r.getOpt("forceChunkSize")),
        resumableTotalSize: file.size,
        resumableType: file.file.type,
        resumableIdentifier: file.uniqueIdentifier,
        resumableFilename: file.fileName,
        resumableRelativePath: file.relativePath,
        resumableTotalChunks: Math.max(file.chunks.length, 1),
      };
    },
  };
}

// ---- page state -------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const queue = $("queue");
const done = $("done");
/** @type {Map<object, Entry>} library file → row state */
const entries = new Map();
const completed = [];
let client;
let nextKey = 1;

/**
 * @typedef {{ key: number, file: object, name: string, path: string, size: number, identifier: string,
 *   state: string, message: string, url: string | undefined, fileId: string | undefined,
 *   bytes: number, speed: number, row: HTMLElement, polls: number }} Entry
 */

const ACTIVE = new Set(["queued", "uploading", "paused", "finishing"]);

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatTime(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s left`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s left`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min left`;
}

/** The human part of an error body `{"error":{"code","message"}}`, or a fallback. */
function errorText(message) {
  try {
    const parsed = JSON.parse(message);
    if (parsed && parsed.error && parsed.error.message) return parsed.error.message;
  } catch { /* not JSON: a proxy page, or nothing at all */ }
  return message && message.length < 200 ? message : "Upload failed: the server could not be reached";
}

function setBar(bar, fraction) {
  const percent = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
  bar.setAttribute("aria-valuenow", String(percent));
  bar.firstElementChild.style.width = `${percent}%`;
}

function render(entry) {
  const { row } = entry;
  row.dataset.state = entry.state;
  const fraction = entry.state === "complete" ? 1 : entry.size === 0 ? 0 : entry.bytes / entry.size;
  setBar(row.querySelector(".bar"), fraction);
  const status = row.querySelector(".status");
  const percent = `${Math.floor(fraction * 100)}%`;
  switch (entry.state) {
    case "queued":
      status.textContent = "Waiting";
      break;
    case "uploading": {
      const parts = [percent];
      if (entry.speed > 0) {
        parts.push(`${formatBytes(entry.speed)}/s`, formatTime((entry.size - entry.bytes) / entry.speed));
      }
      status.textContent = parts.join(" · ");
      break;
    }
    case "paused":
      status.textContent = `Paused at ${percent}`;
      break;
    case "finishing":
      status.textContent = "Assembling on the server…";
      break;
    case "error":
      status.textContent = entry.message;
      break;
    case "complete":
      status.textContent = "Done";
      break;
  }
  status.classList.toggle("error-text", entry.state === "error");
}

function renderOverall() {
  const list = [...entries.values()];
  const active = list.filter((entry) => ACTIVE.has(entry.state));
  const failed = list.filter((entry) => entry.state === "error").length;
  const total = active.reduce((sum, entry) => sum + entry.size, 0);
  const sent = active.reduce((sum, entry) => sum + entry.bytes, 0);
  const speed = active.reduce((sum, entry) => sum + (entry.state === "uploading" ? entry.speed : 0), 0);
  const overall = $("overall");
  overall.dataset.active = String(active.length > 0 || failed > 0);
  overall.dataset.paused = String(active.some((entry) => entry.state === "paused"));
  overall.dataset.failed = String(failed > 0);
  setBar(overall.querySelector(".bar"), total === 0 ? (active.length ? 0 : 1) : sent / total);
  const parts = [];
  if (active.length) {
    parts.push(
      `${active.length} file${active.length === 1 ? "" : "s"}`,
      `${formatBytes(sent)} of ${formatBytes(total)}`,
    );
    if (speed > 0) parts.push(`${formatBytes(speed)}/s`, formatTime((total - sent) / speed));
  }
  if (failed) parts.push(`${failed} failed`);
  $("overall-text").textContent = parts.length ? parts.join(" · ") : "Nothing queued";
  // Switching library in the middle of an upload would orphan the running requests.
  const settingsForm = $("settings");
  settingsForm.title = active.length ? "Switching is possible once no upload is running or paused" : "";
  for (const input of settingsForm.querySelectorAll("input")) input.disabled = active.length > 0;
}

function setState(entry, state, message = "") {
  entry.state = state;
  entry.message = message;
  if (state !== "uploading") entry.speed = 0;
  render(entry);
  renderOverall();
  tick();
}

// ---- speed and time left: sampled, because neither library reports speed the same way -------

let timer;
let lastSample = 0;
function tick() {
  const busy = [...entries.values()].some((entry) => entry.state === "uploading");
  if (busy && !timer) {
    lastSample = performance.now();
    timer = setInterval(sample, 500);
  } else if (!busy && timer) {
    clearInterval(timer);
    timer = undefined;
  }
}

function sample() {
  const now = performance.now();
  const seconds = (now - lastSample) / 1000;
  lastSample = now;
  for (const entry of entries.values()) {
    if (entry.state !== "uploading" || client.failed(entry.file)) continue;
    const bytes = client.progress(entry.file) * entry.size;
    const instant = Math.max(0, bytes - entry.sampled) / seconds;
    entry.sampled = bytes;
    entry.bytes = Math.max(entry.bytes, bytes);
    // Smoothed so the time left does not jump around with every chunk.
    entry.speed = entry.speed === 0 ? instant : entry.speed * 0.7 + instant * 0.3;
    render(entry);
  }
  renderOverall();
}

// ---- library events --------------------------------------------------------------------------

function addRow(file) {
  const row = $("file-row").content.firstElementChild.cloneNode(true);
  const path = file.relativePath || file.fileName || file.name;
  const entry = {
    key: nextKey++,
    file,
    name: file.fileName || file.name,
    path,
    size: file.size,
    identifier: file.uniqueIdentifier,
    state: "uploading",
    message: "",
    url: undefined,
    fileId: undefined,
    bytes: 0,
    sampled: 0,
    speed: 0,
    row,
    polls: 0,
  };
  row.dataset.key = String(entry.key);
  row.dataset.identifier = entry.identifier;
  row.querySelector(".name").textContent = path;
  row.querySelector(".name").title = path;
  row.querySelector(".size").textContent = formatBytes(entry.size);
  row.addEventListener("click", (event) => {
    const action = event.target.closest("button")?.dataset.action;
    if (action) act(entry, action);
  });
  entries.set(file, entry);
  queue.append(row);
  setState(entry, "uploading");
}

function act(entry, action) {
  if (action === "pause" && entry.state === "uploading") {
    client.pause(entry.file);
    entry.bytes = client.progress(entry.file) * entry.size;
    setState(entry, "paused");
  } else if (action === "resume" && entry.state === "paused") {
    setState(entry, "uploading");
    client.resume(entry.file);
  } else if (action === "retry" && entry.state === "error") {
    entry.bytes = 0;
    entry.sampled = 0;
    setState(entry, "uploading");
    client.retry(entry.file);
  } else if (action === "cancel" && entry.state !== "complete") {
    // The clients send nothing when a file is cancelled (docs/protocol.md §9): tell the server, so
    // that it removes the chunks stored so far and gives back the room the upload holds.
    client.cancel(entry.file);
    const identifier = `${client.kind === "flow" ? "flow" : "resumable"}Identifier`;
    fetch(`/upload?${new URLSearchParams({ [identifier]: entry.file.uniqueIdentifier })}`, {
      method: "DELETE",
    })
      .catch(() => {});
    entries.delete(entry.file);
    entry.row.remove();
    renderOverall();
    tick();
  }
}

function onProgress(file) {
  const entry = entries.get(file);
  if (!entry || entry.state !== "uploading" || client.failed(file)) return;
  entry.bytes = Math.max(entry.bytes, client.progress(file) * entry.size);
  render(entry);
  renderOverall();
}

function onSuccess(file, message) {
  const entry = entries.get(file);
  if (!entry || entry.state === "complete") return;
  entry.bytes = entry.size;
  let status;
  try {
    status = JSON.parse(message);
  } catch { /* handled below */ }
  if (status && status.complete && status.file) return finish(entry, status);
  // The last response the browser saw need not be the one in which the server assembled the file
  // (docs/protocol.md §8), so ask again until the server reports it complete.
  setState(entry, "finishing");
  poll(entry);
}

async function poll(entry) {
  const query = new URLSearchParams(
    Object.entries(client.statusQuery(entry.file)).map(([k, v]) => [k, String(v)]),
  );
  while (entry.state === "finishing" && entry.polls++ < 100) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 100 * entry.polls)));
    try {
      const response = await fetch(`/upload?${query}`, { cache: "no-store" });
      const text = await response.text();
      if (response.status === 200) {
        const status = JSON.parse(text);
        if (status.complete && status.file) return finish(entry, status);
      } else if (response.status !== 204) {
        return setState(entry, "error", errorText(text));
      }
    } catch { /* the server may be restarting; keep asking */ }
  }
  if (entry.state === "finishing") setState(entry, "error", "The server did not finish assembling the file");
}

function finish(entry, status) {
  entry.url = status.file.url;
  entry.fileId = status.file.id;
  setState(entry, "complete");
  entry.row.remove();
  // Both libraries refuse a file whose identifier they still hold; forgetting it lets the same file
  // be added again (the server then answers its chunk test with the completed file).
  client.forget(entry.file);
  entries.delete(entry.file);
  const item = document.createElement("li");
  item.dataset.identifier = entry.identifier;
  item.dataset.fileId = entry.fileId;
  const link = document.createElement("a");
  link.href = entry.url || "#";
  link.download = entry.name;
  link.textContent = entry.path;
  const meta = document.createElement("span");
  meta.className = "muted";
  meta.textContent = `${formatBytes(entry.size)} · ${
    client.kind === "flow" ? "flow.js" : "resumable.js"
  }, ${settings.method}`;
  item.append(link, meta);
  done.prepend(item);
  completed.push({
    name: entry.name,
    size: entry.size,
    identifier: entry.identifier,
    fileId: entry.fileId,
    url: entry.url,
  });
  $("completed-count").textContent = `(${completed.length})`;
  $("done-empty").hidden = true;
}

function onError(file, message) {
  const entry = entries.get(file);
  if (!entry) return;
  setState(entry, "error", errorText(message));
}

function install() {
  client = createClient(settings.client, libraryOptions());
  if (!client.supported) {
    $("note").textContent = "This browser cannot slice files, so it cannot upload in chunks.";
    return;
  }
  client.onAdded(addRow);
  client.on("fileProgress", onProgress);
  client.on("fileSuccess", onSuccess);
  client.on("fileError", onError);
  const options = libraryOptions();
  $("note").textContent = `${settings.client === "flow" ? "flow.js" : "resumable.js"} · ${settings.method}` +
    ` · chunks of ${formatBytes(options.chunkSize ?? 1024 * 1024)}` +
    ` · ${options.simultaneousUploads ?? 3} at a time`;
}

// ---- controls --------------------------------------------------------------------------------

for (const input of document.querySelectorAll("#settings input")) {
  input.checked = input.value === settings[input.name];
  input.addEventListener("change", () => {
    settings[input.name] = input.value;
    params.set(input.name, input.value);
    history.replaceState(null, "", `?${params}`);
    // Finished and failed rows belong to the old library instance.
    for (const entry of entries.values()) entry.row.remove();
    entries.clear();
    install();
    renderOverall();
  });
}

for (const id of ["pick-files", "pick-folder"]) {
  $(id).addEventListener("change", (event) => {
    if (event.target.files.length) client.addFiles([...event.target.files]);
    event.target.value = "";
  });
}
if (!("webkitdirectory" in document.createElement("input"))) $("pick-folder-label").hidden = true;

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  drop.classList.remove("over");
  const items = [...(event.dataTransfer?.items ?? [])];
  if (items.length && items.every((item) => item.kind === "file" && !item.webkitGetAsEntry?.())) {
    // Files without a file-system entry (some drag sources, scripted drops): flow.js would walk
    // the missing entries and add nothing, so hand over the plain files.
    event.preventDefault();
    client.addFiles([...event.dataTransfer.files]);
  } else {
    // The library walks dropped folders itself (webkitGetAsEntry).
    client.drop(event);
  }
});
// A file dropped next to the zone would otherwise replace the page.
addEventListener("dragover", (event) => event.preventDefault());
addEventListener("drop", (event) => event.preventDefault());

function each(states, action) {
  for (const entry of [...entries.values()]) if (states.includes(entry.state)) act(entry, action);
}
$("pause-all").addEventListener("click", () => each(["uploading"], "pause"));
$("resume-all").addEventListener("click", () => each(["paused"], "resume"));
$("retry-all").addEventListener("click", () => each(["error"], "retry"));
$("cancel-all").addEventListener("click", () => each(["queued", "uploading", "paused", "error"], "cancel"));

install();
renderOverall();

// For scripts and the browser tests: the same path as the file picker, plus a read-only view.
globalThis.demo = {
  settings,
  get client() {
    return client;
  },
  addFiles: (files) => client.addFiles(files),
  snapshot: () =>
    [...entries.values()].map((
      { key, name, path, size, identifier, state, message, url, fileId, bytes },
    ) => ({
      key,
      name,
      path,
      size,
      identifier,
      state,
      message,
      url,
      fileId,
      bytes,
    })),
  completed: () => completed.slice(),
};
