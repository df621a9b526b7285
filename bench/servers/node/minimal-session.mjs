// node:http with the minimal session (../minimal.mjs), looked up in the handler.
import http from "node:http";
import { listenNode, ready, tuneServer } from "../common.mjs";
import { countOf, incrementMinimal, loadMinimal, loginMinimal } from "../minimal.mjs";

const server = tuneServer(
	http.createServer((req, res) => {
		res.setHeader("content-type", "text/plain");
		if (req.url === "/login") {
			res.setHeader("set-cookie", loginMinimal());
			res.end("ok");
			return;
		}
		const session = loadMinimal(req.headers.cookie);
		if (session === null || (req.url !== "/counter" && req.url !== "/read")) {
			res.statusCode = 404;
			res.end();
			return;
		}
		res.end(String(req.url === "/read" ? countOf(session) : incrementMinimal(session)));
	}),
);
await ready(listenNode(server));
