import assert from "node:assert/strict";
import { createServer, IncomingMessage } from "node:http";
import { Socket } from "node:net";
import { it } from "node:test";
import { SessionNotLoadedError } from "sessionkit";
import { getSession } from "sessionkit/node";
import { createApp } from "../../examples/node/app.js";
import { adapterConformance, listen } from "../adapter-conformance.js";

adapterConformance("node:http", async (sessions, { trustProxy }) =>
	listen(createServer(createApp(sessions, { trustProxy, logErrors: false }))),
);

it("node:http: getSession outside withSessions throws SessionNotLoadedError", () => {
	assert.throws(() => getSession(new IncomingMessage(new Socket())), SessionNotLoadedError);
});
