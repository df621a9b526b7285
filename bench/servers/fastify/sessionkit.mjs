// Fastify 5 with sessionkit's sessionPlugin (any store: BENCH_STORE).
import Fastify from "fastify";
import { ready, sessionkit, sessionkitLogin, sessionkitManager, tuneServer } from "../common.mjs";

const { sessionPlugin, getSession } = await sessionkit("adapters/fastify");
const { sessions, close } = await sessionkitManager();

const app = Fastify({ logger: false });
await app.register(sessionPlugin, { sessions });
app.get("/untouched", async () => "ok");
app.get("/counter", async (request) => String(getSession(request).increment("count")));
app.get("/read", async (request) => String(getSession(request).get("count") ?? 0));
const login = async (request) => {
	sessionkitLogin(getSession(request));
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
