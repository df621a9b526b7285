// Hono 4 on @hono/node-server without sessions: the ceiling.
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { ready, tuneServer } from "../common.mjs";

let counter = 0;
const app = new Hono();
// The floor variant: what one middleware costs, the least any session middleware adds.
if (process.env.BENCH_EMPTY_MIDDLEWARE === "1") {
	app.use(async (_c, next) => {
		await next();
	});
}
app.get("/untouched", (c) => c.text("ok"));
app.get("/counter", (c) => c.text(String(++counter)));
app.get("/read", (c) => c.text(String(counter)));
app.get("/login", (c) => c.text("ok"));
app.get("/create", (c) => c.text("ok"));

await ready(() => new Promise((resolve) => {
	const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => resolve(info.port));
	tuneServer(server);
}));
