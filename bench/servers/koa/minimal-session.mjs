// Koa 3 with the least a server-side session with hashed tokens does on the counter route,
// as an app.use() middleware: find the cookie, SHA-256 its token, look the record up in a Map
// and put `{ key, data }` on ctx.session; the route stores a new copy with the counter plus
// one. No expiry, no validation, nothing after next(), no parallel-safe merge: a reference for
// what the counter route cannot cost less than in Koa, not a session library.
import { createHash, randomBytes } from "node:crypto";
import Koa from "koa";
import { LOGIN, ready, tuneServer } from "../common.mjs";

const records = new Map();
const sha256 = (token) => createHash("sha256").update(token).digest("hex");

function tokenOf(ctx) {
	const header = ctx.headers.cookie ?? "";
	const at = header.indexOf("sid=");
	return at < 0 ? null : header.slice(at + 4, at + 47);
}

const app = new Koa();
app.use(async (ctx, next) => {
	const token = tokenOf(ctx);
	const key = token === null ? null : sha256(token);
	const record = key === null ? undefined : records.get(key);
	ctx.session = record === undefined ? null : { key, data: record.data };
	await next();
});
app.use((ctx) => {
	switch (ctx.path) {
		case "/login": {
			const token = randomBytes(32).toString("base64url");
			const data = Object.fromEntries(Object.entries(LOGIN).map(([key, value]) => [key, JSON.stringify(value)]));
			records.set(sha256(token), { data, idleExpiresAt: Date.now() + 1_800_000 });
			ctx.set("set-cookie", `sid=${token}; Path=/; HttpOnly; SameSite=Lax`);
			ctx.body = "ok";
			return;
		}
		case "/counter": {
			if (ctx.session === null) {
				ctx.status = 404;
				return;
			}
			const { key, data } = ctx.session;
			const count = Number(data.count ?? 0);
			records.set(key, { data: { ...data, count: String(count + 1) }, idleExpiresAt: Date.now() + 1_800_000 });
			ctx.body = String(count + 1);
			return;
		}
		case "/read":
			if (ctx.session === null) {
				ctx.status = 404;
				return;
			}
			ctx.body = String(Number(ctx.session.data.count ?? 0));
			return;
	}
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}));
