// The page's sections: tabs, drop zones, messages, and the compare, find-faces, identify and
// records flows (people.js has the people).
"use strict";

const $ = (id) => document.getElementById(id);

const ui = {
  status(text) { $("status").textContent = text; },
  clearError() { $("error").hidden = true; $("error").textContent = ""; },
  error(error) {
    const message = error instanceof ApiError ? error.message : `Something went wrong: ${error}`;
    ui.alert(message);
    if (error instanceof ApiError && error.status === 401) askForKey(message);
  },
  // A message in the alert line: an error answer, or what is wrong with an input before it is sent.
  alert(message) {
    $("error").textContent = message;
    $("error").hidden = false;
    ui.status("");
  },
  // Runs a flow with its button disabled and its messages shown; returns its result.
  async run(button, label, work) {
    ui.clearError();
    ui.status(label);
    if (button) button.disabled = true;
    try {
      const result = await work();
      ui.status("");
      return result;
    } catch (error) {
      ui.error(error);
      return undefined;
    } finally {
      if (button) button.disabled = false;
    }
  },
  el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    for (const child of children) node.append(child);
    return node;
  },
};
window.ui = ui;

// -- API key

function askForKey(reason) {
  $("key-panel").hidden = false;
  if (reason) $("key-reason").textContent = `${reason} It is kept in this browser only (localStorage) and sent as X-API-Key.`;
  $("key-input").focus();
}

$("key-button").addEventListener("click", () => askForKey(""));
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.setKey($("key-input").value.trim());
  $("key-input").value = "";
  $("key-panel").hidden = true;
  ui.clearError();
  ui.status("API key saved: try again.");
});
$("key-forget").addEventListener("click", () => {
  api.setKey("");
  ui.status("API key forgotten.");
});

// -- tabs (arrow keys move between them, as WAI-ARIA's tab pattern)

const tabs = [...document.querySelectorAll('[role="tab"]')];
function showTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  const panel = tab.getAttribute("aria-controls");
  if (panel === "people") people.load();
  if (panel === "records") loadRecords();
}
tabs.forEach((tab, index) => {
  tab.tabIndex = index === 0 ? 0 : -1;
  tab.addEventListener("click", () => showTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(index + step + tabs.length) % tabs.length];
    next.focus();
    showTab(next);
  });
});

// -- drop zones: a dropped file goes into the zone's file input

for (const zone of document.querySelectorAll(".drop")) {
  const input = $(zone.dataset.input);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = new DataTransfer();
    for (const file of event.dataTransfer.files) {
      files.items.add(file);
      if (!input.multiple) break;
    }
    input.files = files.files;
    input.dispatchEvent(new Event("change"));
  });
}

function threshold(input) {
  return input.value.trim() === "" ? null : input.value.trim();
}

// A result stays only beside the inputs it was made from: another photo or threshold takes it
// away, with the photos drawn for it, so that an attempt that fails (a file that is no photo)
// never leaves an earlier answer standing next to inputs it was not made from.
function resultGoesWithInputs(formId, ...shownIds) {
  $(formId).addEventListener("change", () => {
    for (const id of shownIds) $(id).hidden = true;
  });
}

// -- compare

resultGoesWithInputs("compare-form", "compare-result", "compare-canvas-a", "compare-canvas-b");

$("compare-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const [a, b] = [$("compare-a").files[0], $("compare-b").files[0]];
  const form = new FormData();
  form.append("image_a", a);
  form.append("image_b", b);
  const limit = threshold($("compare-threshold"));
  if (limit !== null) form.append("threshold", limit);
  const result = await ui.run(event.submitter, "Comparing…", () => api.post("/face-similarity", { form }));
  if (!result) return;
  const decision = $("compare-decision");
  decision.textContent = result.same_person ? "Same person" : "Different people";
  decision.className = `decision ${result.same_person ? "same" : "different"}`;
  $("compare-similarity").textContent = stripZeros(result.similarity, 3);
  $("compare-used-threshold").textContent = stripZeros(result.threshold, 3);
  $("compare-result").hidden = false;
  const colour = result.same_person ? "#00c853" : "#ff1744";
  for (const [file, canvas, face] of [[a, "compare-canvas-a", result.face_a], [b, "compare-canvas-b", result.face_b]]) {
    await drawing.drawPhoto($(canvas), file);
    drawing.drawFace($(canvas), face, { colour });
  }
});

// -- find faces

resultGoesWithInputs("find-form", "find-result");

$("find-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("find-image").files[0];
  const form = new FormData();
  form.append("images", file);
  form.append("return_face_crops", "true");
  form.append("return_embedding", "false");
  if ($("find-store").checked) form.append("store", "true");
  const result = await ui.run(event.submitter, "Finding faces…", () => api.post("/extract", { form }));
  if (!result) return;
  const [image] = result.images;
  if (image.status !== "ok") { ui.error(new ApiError(400, `This could not be read: ${image.error}`)); return; }
  const count = image.faces.length;
  $("find-count").textContent = count === 1 ? "1 face found" : `${count} faces found`;
  const canvas = $("find-canvas");
  await drawing.drawPhoto(canvas, file);
  const list = $("find-faces");
  list.replaceChildren();
  image.faces.forEach((face, index) => {
    const colour = drawing.COLOURS[index % drawing.COLOURS.length];
    drawing.drawFace(canvas, face, { colour, label: String(index + 1) });
    list.append(ui.el("li", {},
      ui.el("img", { src: `data:image/jpeg;base64,${face.crop}`, alt: `face ${index + 1}, aligned` }),
      ui.el("span", { textContent: ` score ${stripZeros(face.det_score, 2)}, ${Math.round(face.face_size)} px` })));
  });
  $("find-record").textContent = image.record_id ? `Saved as record ${image.record_id}.` : "";
  $("find-record").hidden = !image.record_id;
  $("find-result").hidden = false;
});

// -- identify

resultGoesWithInputs("identify-form", "identify-result");

$("identify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("identify-image").files[0];
  const form = new FormData();
  form.append("image", file);
  const limit = threshold($("identify-threshold"));
  if (limit !== null) form.append("threshold", limit);
  const result = await ui.run(event.submitter, "Identifying…", () => api.post("/identify", { form }));
  if (!result) return;
  const canvas = $("identify-canvas");
  await drawing.drawPhoto(canvas, file);
  const list = $("identify-faces");
  list.replaceChildren();
  let known = 0;
  result.faces.forEach((face, index) => {
    const label = face.match
      ? `${face.match.name || face.match.identity_id} ${stripZeros(face.match.similarity, 2)}`
      : "unknown";
    if (face.match) known += 1;
    const colour = face.match ? drawing.COLOURS[index % drawing.COLOURS.length] : "#ff1744";
    drawing.drawFace(canvas, face, { colour, label, landmarks: false });
    list.append(ui.el("li", { className: "identified", textContent: label }));
  });
  $("identify-summary").textContent =
    `${result.faces.length} face(s), ${known} recognised (threshold ${stripZeros(result.threshold, 2)})`;
  canvas.setAttribute("aria-label", [...list.children].map((li) => li.textContent).join(", "));
  $("identify-result").hidden = false;
});

// -- records

const RECORDS_PAGE = 20;
let recordsOffset = 0;

// data-label: the column's name, shown beside each value where the table is a list (phones).
function cell(label, text) {
  const td = ui.el("td", { textContent: text });
  td.dataset.label = label;
  return td;
}

async function loadRecords() {
  const name = $("records-filename").value.trim();
  const query = new URLSearchParams({ offset: recordsOffset, limit: RECORDS_PAGE });
  if (name) query.set("filename", name);
  const page = await ui.run(null, "Loading records…", () => api.get(`/records?${query}`));
  if (!page) return;
  $("records-summary").textContent = page.total
    ? `${page.offset + 1}–${page.offset + page.items.length} of ${page.total}` : "No records.";
  const rows = page.items.map((record) => {
    const remove = ui.el("button", { type: "button", className: "danger", textContent: "Delete" });
    remove.setAttribute("aria-label", `Delete record ${record.filename}`);
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete the record of ${record.filename}?`)) return;
      const done = await ui.run(remove, "Deleting…", () => api.del(`/records/${encodeURIComponent(record.record_id)}`));
      if (done !== undefined) loadRecords();
    });
    return ui.el("tr", {},
      cell("File", record.filename),
      cell("Size", `${record.width}×${record.height}`),
      cell("Faces", String(record.faces.length)),
      cell("Saved", new Date(record.created_at).toLocaleString()),
      ui.el("td", {}, remove));
  });
  $("records-list").replaceChildren(...rows);
  $("records-prev").disabled = page.offset === 0;
  $("records-next").disabled = page.offset + page.items.length >= page.total;
}

$("records-search").addEventListener("submit", (event) => { event.preventDefault(); recordsOffset = 0; loadRecords(); });
$("records-prev").addEventListener("click", () => { recordsOffset = Math.max(0, recordsOffset - RECORDS_PAGE); loadRecords(); });
$("records-next").addEventListener("click", () => { recordsOffset += RECORDS_PAGE; loadRecords(); });
