import assert from "node:assert/strict";
import { createServer } from "node:http";
import { it } from "node:test";
import express from "express";
import express4 from "express4";
import { createSessions, SessionNotLoadedError } from "sessionkit";
import { getSession, sessionMiddleware } from "sessionkit/express";
import { memoryStore } from "sessionkit/stores/memory";
import { adapterConformance, listen } from "../adapter-conformance.js";
import { createExpressApp } from "./express-app.js";

adapterConformance("express 5", async (sessions, options) => listen(createServer(createExpressApp(express, sessions, options))));
adapterConformance("express 4", async (sessions, options) => listen(createServer(createExpressApp(express4, sessions, options))));

it("express: getSession without the middleware throws SessionNotLoadedError", async (t) => {
	const app = express();
	let thrown: unknown;
	app.get("/", (req, res) => {
		try {
			getSession(req);
		} catch (error) {
			thrown = error;
		}
		res.send("ok");
	});
	const server = await listen(createServer(app));
	t.after(() => server.close());
	await (await fetch(server.url)).text();
	assert.ok(thrown instanceof SessionNotLoadedError);
});

it("express: a session first used after the headers went out is still readable, and sets no cookie", async (t) => {
	const app = express();
	app.use(sessionMiddleware(createSessions({ store: memoryStore({ sweepInterval: 0 }) })));
	app.get("/late", (req, res) => {
		res.type("text/plain");
		res.write("visits: ");
		res.end(String(req.session.increment("visits")));
	});
	const server = await listen(createServer(app));
	t.after(() => server.close());
	const reply = await fetch(`${server.url}/late`);
	assert.equal(reply.status, 200);
	assert.equal(await reply.text(), "visits: 1");
	assert.equal(reply.headers.get("set-cookie"), null);
});
