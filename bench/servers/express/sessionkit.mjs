// Express 5 with sessionkit's sessionMiddleware (any store: BENCH_STORE).
import express from "express";
import { ready, sessionkit, sessionkitLogin, sessionkitManager, tuneServer } from "../common.mjs";

const { sessionMiddleware } = await sessionkit("adapters/express");
const { sessions, close } = await sessionkitManager();

const app = express();
app.use(sessionMiddleware(sessions));
app.get("/untouched", (_req, res) => res.send("ok"));
app.get("/counter", (req, res) => res.send(String(req.session.increment("count"))));
app.get("/read", (req, res) => res.send(String(req.session.get("count") ?? 0)));
app.get(["/login", "/create"], (req, res) => {
	sessionkitLogin(req.session);
	res.send("ok");
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}), close);
