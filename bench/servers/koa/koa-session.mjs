// Koa 3 with koa-session and an external store (its `store` option): a Map, or a small
// Redis store on ioredis (koa-session has no maintained Redis store of its own).
import Koa from "koa";
import session from "koa-session";
import { countPeerStore, env, objectLogin, ready, SECRET_ITEMS, skip, tuneServer } from "../common.mjs";

const DAY = 86_400_000;
let store;
let close = async () => {};
switch (env.store) {
	case "memory": {
		const map = new Map();
		store = {
			get: (key) => map.get(key),
			set: (key, sess) => void map.set(key, sess),
			destroy: (key) => void map.delete(key),
		};
		break;
	}
	case "redis": {
		const { Redis } = await import("ioredis");
		const client = new Redis(env.redisUrl);
		await client.ping();
		store = {
			async get(key) {
				const text = await client.get(`koa:${key}`);
				return text === null ? null : JSON.parse(text);
			},
			async set(key, sess, maxAge) {
				await client.set(`koa:${key}`, JSON.stringify(sess), "PX", typeof maxAge === "number" ? maxAge : DAY);
			},
			async destroy(key) {
				await client.del(`koa:${key}`);
			},
		};
		close = async () => client.quit();
		break;
	}
	default:
		skip(`koa-session has no "${env.store}" store in this bench`);
}
countPeerStore(store, ["get", "set", "destroy"]);

const app = new Koa();
app.keys = SECRET_ITEMS;
app.use(session({ key: "sid", store }, app));
app.use((ctx) => {
	switch (ctx.path) {
		case "/untouched":
			ctx.body = "ok";
			return;
		case "/counter":
			ctx.session.count = (ctx.session.count ?? 0) + 1;
			ctx.body = String(ctx.session.count);
			return;
		case "/read":
			ctx.body = String(ctx.session.count ?? 0);
			return;
		case "/login":
		case "/create":
			objectLogin(ctx.session);
			ctx.body = "ok";
			return;
	}
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}), close);
