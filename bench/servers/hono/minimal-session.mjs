// Hono 4 on @hono/node-server with the minimal session (../minimal.mjs), as an app.use()
// middleware that keeps it with c.set("session").
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { ready, tuneServer } from "../common.mjs";
import { countOf, incrementMinimal, loadMinimal, loginMinimal } from "../minimal.mjs";

const app = new Hono();
app.use(async (c, next) => {
	c.set("session", loadMinimal(c.req.header("cookie")));
	await next();
});
app.get("/login", (c) => {
	c.header("set-cookie", loginMinimal());
	return c.text("ok");
});
app.get("/counter", (c) => {
	const session = c.get("session");
	return session === null ? c.notFound() : c.text(String(incrementMinimal(session)));
});
app.get("/read", (c) => {
	const session = c.get("session");
	return session === null ? c.notFound() : c.text(String(countOf(session)));
});

await ready(() => new Promise((resolve) => {
	const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => resolve(info.port));
	tuneServer(server);
}));
