// Express 5 with the minimal session (../minimal.mjs), as an app.use() middleware that puts it
// on req.session.
import express from "express";
import { ready, tuneServer } from "../common.mjs";
import { countOf, incrementMinimal, loadMinimal, loginMinimal } from "../minimal.mjs";

const app = express();
app.use((req, _res, next) => {
	req.session = loadMinimal(req.headers.cookie);
	next();
});
app.get("/login", (_req, res) => {
	res.setHeader("set-cookie", loginMinimal());
	res.send("ok");
});
app.get("/counter", (req, res) => {
	if (req.session === null) return void res.status(404).end();
	res.send(String(incrementMinimal(req.session)));
});
app.get("/read", (req, res) => {
	if (req.session === null) return void res.status(404).end();
	res.send(String(countOf(req.session)));
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}));
