// Express 5 without sessions: the ceiling.
import express from "express";
import { ready, tuneServer } from "../common.mjs";

let counter = 0;
const app = express();
// The floor variant: what one middleware costs, the least any session middleware adds.
if (process.env.BENCH_EMPTY_MIDDLEWARE === "1") app.use((_req, _res, next) => next());
app.get("/untouched", (_req, res) => res.send("ok"));
app.get("/counter", (_req, res) => res.send(String(++counter)));
app.get("/read", (_req, res) => res.send(String(counter)));
app.get(["/login", "/create"], (_req, res) => res.send("ok"));

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}));
