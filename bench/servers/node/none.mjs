// node:http without sessions: the ceiling.
import http from "node:http";
import { listenNode, ready, tuneServer } from "../common.mjs";

let counter = 0;
const server = tuneServer(
	http.createServer((req, res) => {
		res.setHeader("content-type", "text/plain");
		switch (req.url) {
			case "/untouched":
			case "/login":
			case "/create":
				res.end("ok");
				return;
			case "/counter":
				res.end(String(++counter));
				return;
			case "/read":
				res.end(String(counter));
				return;
		}
		res.statusCode = 404;
		res.end();
	}),
);
await ready(listenNode(server));
