// Fastify 5 with the least a server-side session with hashed tokens does on the counter route,
// as an onRequest hook (request.session declared with decorateRequest, so every request has the
// same shape): find the cookie, SHA-256 its token, look the record up in a Map and set
// `{ key, data }`; the route stores a new copy with the counter plus one. No expiry, no
// validation, no onSend hook, no parallel-safe merge: a reference for what the counter route
// cannot cost less than in Fastify, not a session library.
import { createHash, randomBytes } from "node:crypto";
import Fastify from "fastify";
import { LOGIN, ready, tuneServer } from "../common.mjs";

const records = new Map();
const sha256 = (token) => createHash("sha256").update(token).digest("hex");

function tokenOf(request) {
	const header = request.headers.cookie ?? "";
	const at = header.indexOf("sid=");
	return at < 0 ? null : header.slice(at + 4, at + 47);
}

const app = Fastify({ logger: false });
app.decorateRequest("session", null);
app.addHook("onRequest", (request, _reply, done) => {
	const token = tokenOf(request);
	const key = token === null ? null : sha256(token);
	const record = key === null ? undefined : records.get(key);
	request.session = record === undefined ? null : { key, data: record.data };
	done();
});
app.get("/login", async (_request, reply) => {
	const token = randomBytes(32).toString("base64url");
	const data = Object.fromEntries(Object.entries(LOGIN).map(([key, value]) => [key, JSON.stringify(value)]));
	records.set(sha256(token), { data, idleExpiresAt: Date.now() + 1_800_000 });
	reply.header("set-cookie", `sid=${token}; Path=/; HttpOnly; SameSite=Lax`);
	return "ok";
});
app.get("/counter", async (request, reply) => {
	if (request.session === null) return reply.code(404).send();
	const { key, data } = request.session;
	const count = Number(data.count ?? 0);
	records.set(key, { data: { ...data, count: String(count + 1) }, idleExpiresAt: Date.now() + 1_800_000 });
	return String(count + 1);
});
app.get("/read", async (request, reply) => {
	if (request.session === null) return reply.code(404).send();
	return String(Number(request.session.data.count ?? 0));
});

await ready(async () => {
	await app.listen({ port: 0, host: "127.0.0.1" });
	tuneServer(app.server);
	return app.server.address().port;
}, () => app.close());
