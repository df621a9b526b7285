// Express 5 with the least a server-side session with hashed tokens does on the counter route,
// as an app.use() middleware: find the cookie, SHA-256 its token, look the record up in a Map
// and put `{ key, data }` on req.session; the route stores a new copy with the counter plus
// one. No expiry, no validation, no response hook, no parallel-safe merge: a reference for
// what the counter route cannot cost less than in Express, not a session library.
import { createHash, randomBytes } from "node:crypto";
import express from "express";
import { LOGIN, ready, tuneServer } from "../common.mjs";

const records = new Map();
const sha256 = (token) => createHash("sha256").update(token).digest("hex");

function tokenOf(req) {
	const header = req.headers.cookie ?? "";
	const at = header.indexOf("sid=");
	return at < 0 ? null : header.slice(at + 4, at + 47);
}

const app = express();
app.use((req, _res, next) => {
	const token = tokenOf(req);
	const key = token === null ? null : sha256(token);
	const record = key === null ? undefined : records.get(key);
	req.session = record === undefined ? null : { key, data: record.data };
	next();
});
app.get("/login", (_req, res) => {
	const token = randomBytes(32).toString("base64url");
	const data = Object.fromEntries(Object.entries(LOGIN).map(([key, value]) => [key, JSON.stringify(value)]));
	records.set(sha256(token), { data, idleExpiresAt: Date.now() + 1_800_000 });
	res.setHeader("set-cookie", `sid=${token}; Path=/; HttpOnly; SameSite=Lax`);
	res.send("ok");
});
app.get("/counter", (req, res) => {
	if (req.session === null) return void res.status(404).end();
	const { key, data } = req.session;
	const count = Number(data.count ?? 0);
	records.set(key, { data: { ...data, count: String(count + 1) }, idleExpiresAt: Date.now() + 1_800_000 });
	res.send(String(count + 1));
});
app.get("/read", (req, res) => {
	if (req.session === null) return void res.status(404).end();
	res.send(String(Number(req.session.data.count ?? 0)));
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}));
