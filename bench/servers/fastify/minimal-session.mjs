// Fastify 5 with the minimal session (../minimal.mjs), as an onRequest hook that puts it on
// request.session (declared with decorateRequest, so every request has the same shape).
import Fastify from "fastify";
import { ready, tuneServer } from "../common.mjs";
import { countOf, incrementMinimal, loadMinimal, loginMinimal } from "../minimal.mjs";

const app = Fastify({ logger: false });
app.decorateRequest("session", null);
app.addHook("onRequest", (request, _reply, done) => {
	request.session = loadMinimal(request.headers.cookie);
	done();
});
app.get("/login", async (_request, reply) => {
	reply.header("set-cookie", loginMinimal());
	return "ok";
});
app.get("/counter", async (request, reply) => {
	if (request.session === null) return reply.code(404).send();
	return String(incrementMinimal(request.session));
});
app.get("/read", async (request, reply) => {
	if (request.session === null) return reply.code(404).send();
	return String(countOf(request.session));
});

await ready(async () => {
	await app.listen({ port: 0, host: "127.0.0.1" });
	tuneServer(app.server);
	return app.server.address().port;
}, () => app.close());
