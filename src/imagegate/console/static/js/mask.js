// Mask painter: paint over the input image; the painted area becomes the transparent
// (alpha 0) region of the mask, which is what OpenAI's edit endpoint edits.
import { h } from "./ui.js";

export class MaskPainter {
  /** @param {HTMLImageElement} image a loaded image: the canvas takes its natural size. */
  constructor(image) {
    this.image = image;
    this.mode = "brush";
    this.size = 32;
    this.painted = false;
    this.canvas = h("canvas", {
      class: "mask-canvas",
      width: image.naturalWidth,
      height: image.naturalHeight,
      "aria-label": "Mask: paint the area to edit. Keyboard: arrows move the brush, Shift+arrows paint while moving, Space paints here",
      role: "application",
      tabindex: 0,
    });
    this.cursor = h("div", { class: "mask-cursor", hidden: true });
    this.at = { x: image.naturalWidth / 2, y: image.naturalHeight / 2 };
    this.ctx = this.canvas.getContext("2d");
    this.element = h(
      "div",
      { class: "mask-painter" },
      h("div", { class: "mask-stage" }, h("img", { src: image.src, alt: "Input image" }), this.canvas, this.cursor),
      this.tools(),
    );
    this.listen();
  }

  tools() {
    const mode = (value, label) =>
      h(
        "label",
        { class: "chip" },
        h("input", {
          type: "radio",
          name: "mask-mode",
          value,
          checked: value === this.mode,
          onchange: () => (this.mode = value),
        }),
        label,
      );
    const size = h("input", {
      id: "mask-size",
      type: "range",
      min: 4,
      max: 120,
      value: this.size,
      oninput: (e) => (this.size = Number(e.target.value)),
    });
    return h(
      "div",
      { class: "mask-tools", role: "group", "aria-label": "Mask tools" },
      mode("brush", "Brush"),
      mode("eraser", "Eraser"),
      h("label", { for: "mask-size" }, "Size"),
      size,
      h("button", { type: "button", id: "mask-clear", onclick: () => this.clear() }, "Clear mask"),
    );
  }

  listen() {
    let last = null;
    const point = (event) => {
      const rect = this.canvas.getBoundingClientRect();
      const scale = this.canvas.width / rect.width;
      return {
        x: (event.clientX - rect.left) * scale,
        y: (event.clientY - rect.top) * scale,
        width: this.size * scale,
      };
    };
    this.canvas.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      this.canvas.setPointerCapture(event.pointerId);
      last = point(event);
      this.stroke(last, last);
    });
    this.canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const next = point(event);
      this.stroke(last, next);
      last = next;
    });
    const end = () => (last = null);
    this.canvas.addEventListener("pointerup", end);
    this.canvas.addEventListener("pointercancel", end);
    this.canvas.addEventListener("keydown", (event) => this.key(event));
    this.canvas.addEventListener("focus", () => this.showCursor());
    this.canvas.addEventListener("blur", () => (this.cursor.hidden = true));
  }

  /** Keyboard painting: arrows move, Shift+arrows paint along, Space/Enter paint a dot. */
  key(event) {
    const rect = this.canvas.getBoundingClientRect();
    const scale = this.canvas.width / (rect.width || this.canvas.width);
    const step = Math.max(1, (this.size * scale) / 2);
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    const width = this.size * scale;
    if (moves[event.key]) {
      event.preventDefault();
      const from = { ...this.at, width };
      this.at.x = Math.min(this.canvas.width, Math.max(0, this.at.x + moves[event.key][0]));
      this.at.y = Math.min(this.canvas.height, Math.max(0, this.at.y + moves[event.key][1]));
      if (event.shiftKey) this.stroke(from, { ...this.at, width });
      this.showCursor();
    } else if (event.key === " " || event.key === "Enter") {
      event.preventDefault();
      this.stroke({ ...this.at, width }, { ...this.at, width });
    }
  }

  showCursor() {
    const rect = this.canvas.getBoundingClientRect();
    const k = rect.width / this.canvas.width;
    Object.assign(this.cursor.style, {
      left: `${this.at.x * k - this.size / 2}px`,
      top: `${this.at.y * k - this.size / 2}px`,
      width: `${this.size}px`,
      height: `${this.size}px`,
    });
    this.cursor.hidden = false;
  }

  stroke(from, to) {
    const ctx = this.ctx;
    ctx.globalCompositeOperation = this.mode === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = "rgba(255, 40, 120, 1)";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = to.width;
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x + 0.01, to.y);
    ctx.stroke();
    if (this.mode === "brush") this.painted = true;
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.painted = false;
  }

  /** The mask PNG: opaque everywhere, alpha 0 wherever any paint is (edges included). */
  toBlob() {
    const { width, height } = this.canvas;
    const paint = this.ctx.getImageData(0, 0, width, height).data;
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const octx = out.getContext("2d");
    const mask = octx.createImageData(width, height);
    let any = false;
    for (let i = 0; i < paint.length; i += 4) {
      const painted = paint[i + 3] > 0;
      any = any || painted;
      mask.data[i + 3] = painted ? 0 : 255;
    }
    octx.putImageData(mask, 0, 0);
    this.painted = any;
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }
}
