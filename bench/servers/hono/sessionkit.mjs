// Hono 4 on @hono/node-server with sessionkit's sessionMiddleware (any store: BENCH_STORE).
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { ready, sessionkit, sessionkitLogin, sessionkitManager, tuneServer } from "../common.mjs";

const { sessionMiddleware, getSession } = await sessionkit("adapters/hono");
const { sessions, close } = await sessionkitManager();

const app = new Hono();
app.use(sessionMiddleware(sessions));
app.get("/untouched", (c) => c.text("ok"));
app.get("/counter", (c) => c.text(String(getSession(c).increment("count"))));
app.get("/read", (c) => c.text(String(getSession(c).get("count") ?? 0)));
const login = (c) => {
	sessionkitLogin(getSession(c));
	return c.text("ok");
};
app.get("/login", login);
app.get("/create", login);

await ready(() => new Promise((resolve) => {
	const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => resolve(info.port));
	tuneServer(server);
}), close);
