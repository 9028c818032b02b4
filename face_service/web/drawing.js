// Photos on canvases: a picked file drawn at its own pixel size (so the API's boxes, which are
// in the photo's pixels, fit as they are) with boxes, landmarks and labels over it.
"use strict";

const COLOURS = ["#00c853", "#2979ff", "#ff6d00", "#d500f9", "#ffd600", "#00b8d4"];

async function loadPhoto(file) {
  // createImageBitmap applies the EXIF orientation, as the service does before detecting.
  return createImageBitmap(file, { imageOrientation: "from-image" });
}

async function drawPhoto(canvas, file) {
  const bitmap = await loadPhoto(file);
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  canvas.hidden = false;
  return bitmap;
}

function drawFace(canvas, face, { colour = COLOURS[0], label = "", landmarks = true } = {}) {
  const ctx = canvas.getContext("2d");
  const [x1, y1, x2, y2] = face.bbox;
  const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 300));
  ctx.lineWidth = line;
  ctx.strokeStyle = colour;
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  if (landmarks && face.landmarks) {
    ctx.fillStyle = colour;
    for (const [x, y] of face.landmarks) {
      ctx.beginPath();
      ctx.arc(x, y, line * 1.5, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  if (label) {
    const size = Math.max(14, Math.round(canvas.width / 30));
    ctx.font = `600 ${size}px system-ui, sans-serif`;
    const width = ctx.measureText(label).width + size / 2;
    const high = size * 1.3;
    // Above the box; inside its top when the box touches the top of the photo.
    const top = y1 - high >= 0 ? y1 - high : Math.min(Math.max(y1, 0), canvas.height - high);
    ctx.fillStyle = colour;
    ctx.fillRect(x1 - line / 2, top, width, high);
    ctx.fillStyle = "#000";
    ctx.fillText(label, x1 + size / 4, top + size);
  }
}

window.drawing = { COLOURS, drawPhoto, drawFace };
