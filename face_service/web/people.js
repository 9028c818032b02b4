// People: enroll, list and search a page at a time, open one (face thumbnails, metadata),
// rename, edit metadata, add photos, delete a photo or the person, merge another person in.
"use strict";

const PEOPLE_PAGE = 20;
const byId = (id) => document.getElementById(id);
const path = (...parts) => parts.map(encodeURIComponent).join("/");

const people = {
  offset: 0,
  current: null,  // the identity shown
  thumbnails: [],  // object URLs to release

  async load() {
    const name = byId("people-name").value.trim();
    const query = new URLSearchParams({ offset: people.offset, limit: PEOPLE_PAGE });
    if (name) query.set("name", name);
    const page = await ui.run(null, "Loading people…", () => api.get(`/identities?${query}`));
    if (!page) return;
    byId("people-summary").textContent = page.total
      ? `${page.offset + 1}–${page.offset + page.items.length} of ${page.total} people`
      : "No people enrolled yet.";
    byId("people-list").replaceChildren(...page.items.map((identity) => {
      const open = ui.el("button", { type: "button", textContent: "Open" });
      open.setAttribute("aria-label", `Open ${identity.name || identity.identity_id}`);
      open.addEventListener("click", () => people.open(identity.identity_id));
      return ui.el("li", {},
        ui.el("span", {},
          ui.el("strong", { textContent: identity.name || "(no name)" }),
          ` · ${identity.templates.length} photo(s) · `,
          ui.el("code", { textContent: identity.identity_id })),
        open);
    }));
    byId("people-prev").disabled = page.offset === 0;
    byId("people-next").disabled = page.offset + page.items.length >= page.total;
  },

  async open(identityId) {
    const identity = await ui.run(null, "Loading…", () => api.get(`/identities/${path(identityId)}`));
    if (identity) await people.show(identity);
  },

  async show(identity) {
    people.current = identity;
    byId("person").hidden = false;
    byId("person-title").textContent = identity.name || "(no name)";
    byId("person-id").textContent = identity.identity_id;
    byId("person-created").textContent = new Date(identity.created_at).toLocaleString();
    const metadata = JSON.stringify(identity.metadata, null, 2);
    byId("person-metadata").value = metadata;
    byId("person-metadata").rows = Math.min(12, Math.max(2, metadata.split("\n").length));
    byId("rename-name").value = identity.name || "";
    people.thumbnails.forEach((url) => URL.revokeObjectURL(url));
    people.thumbnails = [];
    const items = await Promise.all(identity.templates.map((template) => people.thumbnail(identity, template)));
    byId("person-templates").replaceChildren(...items);
    byId("person-title").focus();
  },

  async thumbnail(identity, template) {
    const source = template.source || "photo";
    let picture;
    try {
      // Fetched (not an <img src>): the request has to carry the API key.
      const blob = await api.request("GET",
        `/identities/${path(identity.identity_id, "templates", template.template_id, "image")}`, { binary: true });
      const url = URL.createObjectURL(blob);
      people.thumbnails.push(url);
      picture = ui.el("img", { src: url, alt: `face from ${source}` });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) ui.error(error);
      picture = ui.el("span", { className: "none", textContent: "no picture stored" });
    }
    const remove = ui.el("button", { type: "button", className: "danger", textContent: "Delete photo" });
    remove.setAttribute("aria-label", `Delete photo ${source}`);
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete this photo (${source}) of ${identity.name || identity.identity_id}?`)) return;
      const updated = await ui.run(remove, "Deleting the photo…", () =>
        api.del(`/identities/${path(identity.identity_id, "templates", template.template_id)}`));
      if (updated) { await people.show(updated); people.load(); }
    });
    return ui.el("li", {}, picture, ui.el("span", { textContent: source }), remove);
  },
};
window.people = people;

function report(list, images) {
  list.replaceChildren(...images.map((image) => ui.el("li", {
    className: image.status,
    textContent: image.status === "enrolled"
      ? `${image.filename || `photo ${image.index + 1}`}: added`
      : `${image.filename || `photo ${image.index + 1}`}: skipped (${image.reason})`,
  })));
}

byId("enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  for (const file of byId("enroll-images").files) form.append("images", file);
  form.append("name", byId("enroll-name").value.trim());
  const id = byId("enroll-id").value.trim();
  if (id) form.append("identity_id", id);
  const metadata = byId("enroll-metadata").value.trim();
  if (metadata) form.append("metadata", metadata);
  const result = await ui.run(event.submitter, "Enrolling…", () => api.post("/identities", { form }));
  if (!result) return;
  report(byId("enroll-report"), result.images);
  const added = result.images.filter((image) => image.status === "enrolled").length;
  ui.status(`Enrolled ${result.identity.name || result.identity.identity_id} from ${added} photo(s).`);
  byId("enroll-form").reset();
  people.offset = 0;
  await people.load();
  await people.show(result.identity);
});

byId("people-search").addEventListener("submit", (event) => { event.preventDefault(); people.offset = 0; people.load(); });
byId("people-prev").addEventListener("click", () => { people.offset = Math.max(0, people.offset - PEOPLE_PAGE); people.load(); });
byId("people-next").addEventListener("click", () => { people.offset += PEOPLE_PAGE; people.load(); });

byId("rename-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const identity = people.current;
  const updated = await ui.run(event.submitter, "Renaming…", () =>
    api.patch(`/identities/${path(identity.identity_id)}`, { name: byId("rename-name").value.trim() }));
  if (updated) { await people.show(updated); people.load(); }
});

const METADATA_EXAMPLE = '{"team": "research"}';

// The metadata as the object PATCH takes, or null after saying what is wrong with the text
// (checked here first: the service would answer a list or a number with a less direct 422).
function metadataObject(text) {
  let value;
  try {
    value = JSON.parse(text.trim() || "{}");
  } catch (error) {
    ui.alert(`Metadata must be a JSON object, like ${METADATA_EXAMPLE}: ${error.message}`);
    return null;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    ui.alert(`Metadata must be a JSON object, like ${METADATA_EXAMPLE}, not ${JSON.stringify(value)}.`);
    return null;
  }
  return value;
}

byId("metadata-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  ui.clearError();
  const identity = people.current;
  const metadata = metadataObject(byId("person-metadata").value);
  if (metadata === null) return;
  const updated = await ui.run(event.submitter, "Saving the metadata…", () =>
    api.patch(`/identities/${path(identity.identity_id)}`, { metadata }));
  if (!updated) return;
  await people.show(updated);
  ui.status(`Saved the metadata of ${updated.name || updated.identity_id}.`);
});

byId("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const identity = people.current;
  const form = new FormData();
  for (const file of byId("add-images").files) form.append("images", file);
  const result = await ui.run(event.submitter, "Adding photos…", () =>
    api.post(`/identities/${path(identity.identity_id, "images")}`, { form }));
  if (!result) return;
  report(byId("add-report"), result.images);
  byId("add-form").reset();
  await people.show(result.identity);
  people.load();
});

byId("merge-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const identity = people.current;
  const source = byId("merge-source").value.trim();
  if (!confirm(`Move every photo of ${source} to ${identity.name || identity.identity_id} and delete ${source}?`)) return;
  const merged = await ui.run(event.submitter, "Merging…", () =>
    api.post(`/identities/${path(identity.identity_id, "merge")}`, { json: { source_id: source } }));
  if (!merged) return;
  byId("merge-form").reset();
  await people.show(merged);
  people.load();
});

byId("person-delete").addEventListener("click", async (event) => {
  const identity = people.current;
  const label = identity.name || identity.identity_id;
  if (!confirm(`Delete ${label} and every photo of them?`)) return;
  const done = await ui.run(event.currentTarget, "Deleting…", () => api.del(`/identities/${path(identity.identity_id)}`));
  if (done === undefined) return;
  byId("person").hidden = true;
  people.current = null;
  await people.load();
  ui.status(`Deleted ${label}.`);
});

byId("person-close").addEventListener("click", () => { byId("person").hidden = true; });
byId("person-title").tabIndex = -1;  // focus lands on the person opened
