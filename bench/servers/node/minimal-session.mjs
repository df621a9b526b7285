// node:http with the least a server-side session with hashed tokens does on the counter route:
// find the cookie, SHA-256 its token, look the record up in a Map, and store a new copy with the
// counter plus one (a copy: a store shares its records and never changes one in place). No
// expiry, no validation, no response hook, no parallel-safe merge: a reference for what the
// counter route cannot cost less than, not a session library.
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { LOGIN, listenNode, ready, tuneServer } from "../common.mjs";

const records = new Map();
const sha256 = (token) => createHash("sha256").update(token).digest("hex");

function tokenOf(req) {
	const header = req.headers.cookie ?? "";
	const at = header.indexOf("sid=");
	return at < 0 ? null : header.slice(at + 4, at + 47);
}

const server = tuneServer(
	http.createServer((req, res) => {
		res.setHeader("content-type", "text/plain");
		if (req.url === "/login") {
			const token = randomBytes(32).toString("base64url");
			const data = Object.fromEntries(Object.entries(LOGIN).map(([key, value]) => [key, JSON.stringify(value)]));
			records.set(sha256(token), { data, idleExpiresAt: Date.now() + 1_800_000 });
			res.setHeader("set-cookie", `sid=${token}; Path=/; HttpOnly; SameSite=Lax`);
			res.end("ok");
			return;
		}
		const token = tokenOf(req);
		const key = token === null ? null : sha256(token);
		const record = key === null ? undefined : records.get(key);
		if (record === undefined || (req.url !== "/counter" && req.url !== "/read")) {
			res.statusCode = 404;
			res.end();
			return;
		}
		const count = Number(record.data.count ?? 0);
		if (req.url === "/read") {
			res.end(String(count));
			return;
		}
		records.set(key, { data: { ...record.data, count: String(count + 1) }, idleExpiresAt: Date.now() + 1_800_000 });
		res.end(String(count + 1));
	}),
);
await ready(listenNode(server));
