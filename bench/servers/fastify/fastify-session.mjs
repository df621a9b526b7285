// Fastify 5 with @fastify/session + @fastify/cookie. Settings that spare the peer useless
// writes: saveUninitialized: false, rolling: false. Stores: its built-in memory Store, and
// connect-redis (express-session stores work with @fastify/session), on node-redis.
import fastifyCookie from "@fastify/cookie";
import fastifySession from "@fastify/session";
import Fastify from "fastify";
import { countPeerStore, env, objectLogin, ready, SECRET, skip, tuneServer } from "../common.mjs";

let store;
let close = async () => {};
switch (env.store) {
	case "memory":
		store = new fastifySession.MemoryStore();
		break;
	case "redis": {
		const { RedisStore } = await import("connect-redis");
		const { createClient } = await import("redis");
		const client = createClient({ url: env.redisUrl });
		await client.connect();
		store = new RedisStore({ client });
		close = async () => client.quit();
		break;
	}
	default:
		skip(`@fastify/session has no maintained "${env.store}" store in this bench`);
}
countPeerStore(store, ["get", "set", "touch", "destroy"]);

const app = Fastify({ logger: false });
await app.register(fastifyCookie);
await app.register(fastifySession, {
	secret: SECRET,
	cookieName: "sid",
	saveUninitialized: false,
	rolling: false,
	cookie: { secure: false, httpOnly: true, sameSite: "lax", path: "/" },
	store,
});
app.get("/untouched", async () => "ok");
app.get("/counter", async (request) => {
	const next = (request.session.get("count") ?? 0) + 1;
	request.session.set("count", next);
	return String(next);
});
app.get("/read", async (request) => String(request.session.get("count") ?? 0));
const login = async (request) => {
	const fields = {};
	objectLogin(fields);
	for (const [key, value] of Object.entries(fields)) request.session.set(key, value);
	return "ok";
};
app.get("/login", login);
app.get("/create", login);

await ready(async () => {
	await app.listen({ port: 0, host: "127.0.0.1" });
	tuneServer(app.server);
	return app.server.address().port;
}, async () => {
	await app.close();
	await close();
});
