// Minimal demo: resumable.js with its defaults against /upload.
const r = new Resumable({ target: "/upload", chunkSize: 1024 * 1024, simultaneousUploads: 3 });
const queue = document.getElementById("queue");
const done = document.getElementById("done");
const rows = new Map();

r.assignBrowse(document.getElementById("browse"));
r.assignDrop(document.getElementById("drop"));

r.on("fileAdded", (file) => {
  const row = document.createElement("li");
  row.textContent = `${file.fileName}: 0%`;
  queue.append(row);
  rows.set(file.uniqueIdentifier, row);
  r.upload();
});
r.on("fileProgress", (file) => {
  rows.get(file.uniqueIdentifier).textContent = `${file.fileName}: ${Math.floor(file.progress() * 100)}%`;
});
r.on("fileSuccess", (file, message) => {
  rows.get(file.uniqueIdentifier).remove();
  const status = JSON.parse(message);
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.href = status.file ? status.file.url : "#";
  link.textContent = `${file.fileName} (${file.size} bytes)`;
  item.append(link);
  done.append(item);
});
r.on("fileError", (file, message) => {
  let text = message;
  try {
    text = JSON.parse(message).error.message;
  } catch { /* not JSON */ }
  rows.get(file.uniqueIdentifier).textContent = `${file.fileName}: ${text}`;
});
