// Fastify 5 without sessions: the ceiling.
import Fastify from "fastify";
import { ready, tuneServer } from "../common.mjs";

let counter = 0;
const app = Fastify({ logger: false });
// The floor variant: a hook before the handler and one before the reply is sent, both empty:
// the least any session plugin adds (sessionkit and @fastify/session use these two).
if (process.env.BENCH_EMPTY_MIDDLEWARE === "1") {
	app.addHook("onRequest", (_request, _reply, done) => done());
	app.addHook("onSend", (_request, _reply, payload, done) => done(null, payload));
}
app.get("/untouched", async () => "ok");
app.get("/counter", async () => String(++counter));
app.get("/read", async () => String(counter));
app.get("/login", async () => "ok");
app.get("/create", async () => "ok");

await ready(async () => {
	await app.listen({ port: 0, host: "127.0.0.1" });
	tuneServer(app.server);
	return app.server.address().port;
}, () => app.close());
