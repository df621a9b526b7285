// Fastify 5 without sessions: the ceiling.
import Fastify from "fastify";
import { ready, tuneServer } from "../common.mjs";

let counter = 0;
const app = Fastify({ logger: false });
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
