// node:http with sessionkit's withSessions (any store: BENCH_STORE).
import http from "node:http";
import { listenNode, ready, sessionkit, sessionkitLogin, sessionkitManager, tuneServer } from "../common.mjs";

const { withSessions, getSession } = await sessionkit("adapters/node");
const { sessions, close } = await sessionkitManager();

const server = tuneServer(
	http.createServer(
		withSessions(sessions, (req, res) => {
			res.setHeader("content-type", "text/plain");
			switch (req.url) {
				case "/untouched":
					res.end("ok");
					return;
				case "/counter":
					res.end(String(getSession(req).increment("count")));
					return;
				case "/read":
					res.end(String(getSession(req).get("count") ?? 0));
					return;
				case "/login":
				case "/create":
					sessionkitLogin(getSession(req));
					res.end("ok");
					return;
			}
			res.statusCode = 404;
			res.end();
		}),
	),
);
await ready(listenNode(server), close);
