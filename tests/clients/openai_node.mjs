// Drives a running imagegate with the official `openai` npm package and prints one JSON
// object of what it saw; tests/test_client_matrix.py asserts on it.
// env: GATEWAY_V1, GATEWAY_KEY, INPUT_PNG (a path), MASK_PNG (a path).
import fs from "node:fs";
import OpenAI, { toFile } from "openai";

const client = new OpenAI({
  baseURL: process.env.GATEWAY_V1,
  apiKey: process.env.GATEWAY_KEY,
  maxRetries: 0,
});
const png = fs.readFileSync(process.env.INPUT_PNG);
const file = (name) => toFile(png, name, { type: "image/png" });
const out = {};

const b64 = await client.images.generate({
  model: "imagegate/sandbox", prompt: "a lighthouse", size: "96x64", n: 2,
});
out.b64 = { count: b64.data.length, size: b64.size, hasB64: b64.data.every((d) => !!d.b64_json) };

const url = await client.images.generate({
  model: "sandbox", prompt: "a bridge", size: "64x64", response_format: "url",
});
const fetched = await fetch(url.data[0].url);
const bytes = new Uint8Array(await fetched.arrayBuffer());
out.url = { status: fetched.status, type: fetched.headers.get("content-type"), pngMagic: bytes[1] === 0x50 };

const edit1 = await client.images.edit({
  model: "sandbox", prompt: "add a hat", image: await file("one.png"),
  mask: await toFile(fs.readFileSync(process.env.MASK_PNG), "mask.png", { type: "image/png" }),
});
out.edit1 = { count: edit1.data.length, size: edit1.size };

const edit2 = await client.images.edit({
  model: "sandbox", prompt: "combine", image: [await file("a.png"), await file("b.png")],
});
out.edit2 = { count: edit2.data.length, size: edit2.size };

const variation = await client.images.createVariation({
  model: "sandbox", image: await file("v.png"), n: 2, size: "64x64",
});
out.variation = { count: variation.data.length, size: variation.size };

const stream = await client.images.generate({
  model: "sandbox", prompt: "streamed", size: "64x64", stream: true, partial_images: 2,
});
const types = [];
for await (const event of stream) types.push(event.type);
out.stream = types;

const model = await client.models.retrieve("imagegate/sandbox");
out.model = { id: model.id, object: model.object };

try {
  await client.images.generate({ model: "nope/nope", prompt: "x" });
  out.error = null;
} catch (err) {
  out.error = { cls: err.constructor.name, status: err.status, code: err.code, param: err.param };
}
try {
  await new OpenAI({ baseURL: process.env.GATEWAY_V1, apiKey: "sk-wrong", maxRetries: 0 })
    .models.list();
  out.auth = null;
} catch (err) {
  out.auth = { cls: err.constructor.name, status: err.status, code: err.code, type: err.type };
}
console.log(JSON.stringify(out));
