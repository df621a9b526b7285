import assert from "node:assert/strict";
import { createServer } from "node:http";
import { it } from "node:test";
import express from "express";
import express4 from "express4";
import { SessionNotLoadedError } from "sessionkit";
import { getSession } from "sessionkit/express";
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
