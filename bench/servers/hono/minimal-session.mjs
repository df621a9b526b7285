// Hono 4 on @hono/node-server with the least a server-side session with hashed tokens does on
// the counter route, as an app.use() middleware: find the cookie, SHA-256 its token, look the
// record up in a Map and c.set("session", { key, data }); the route stores a new copy with the
// counter plus one. No expiry, no validation, nothing after next(), no parallel-safe merge: a
// reference for what the counter route cannot cost less than in Hono, not a session library.
import { createHash, randomBytes } from "node:crypto";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { LOGIN, ready, tuneServer } from "../common.mjs";

const records = new Map();
const sha256 = (token) => createHash("sha256").update(token).digest("hex");

function tokenOf(c) {
	const header = c.req.header("cookie") ?? "";
	const at = header.indexOf("sid=");
	return at < 0 ? null : header.slice(at + 4, at + 47);
}

const app = new Hono();
app.use(async (c, next) => {
	const token = tokenOf(c);
	const key = token === null ? null : sha256(token);
	const record = key === null ? undefined : records.get(key);
	c.set("session", record === undefined ? null : { key, data: record.data });
	await next();
});
app.get("/login", (c) => {
	const token = randomBytes(32).toString("base64url");
	const data = Object.fromEntries(Object.entries(LOGIN).map(([key, value]) => [key, JSON.stringify(value)]));
	records.set(sha256(token), { data, idleExpiresAt: Date.now() + 1_800_000 });
	c.header("set-cookie", `sid=${token}; Path=/; HttpOnly; SameSite=Lax`);
	return c.text("ok");
});
app.get("/counter", (c) => {
	const session = c.get("session");
	if (session === null) return c.notFound();
	const { key, data } = session;
	const count = Number(data.count ?? 0);
	records.set(key, { data: { ...data, count: String(count + 1) }, idleExpiresAt: Date.now() + 1_800_000 });
	return c.text(String(count + 1));
});
app.get("/read", (c) => {
	const session = c.get("session");
	if (session === null) return c.notFound();
	return c.text(String(Number(session.data.count ?? 0)));
});

await ready(() => new Promise((resolve) => {
	const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => resolve(info.port));
	tuneServer(server);
}));
