// node:http with iron-session (the encrypted-cookie peer). Only the cookie store exists.
import http from "node:http";
import { getIronSession } from "iron-session";
import { env, listenNode, objectLogin, ready, SECRET, skip, tuneServer } from "../common.mjs";

if (env.store !== "cookie") skip(`iron-session keeps sessions in the cookie only (asked for "${env.store}")`);
const options = { password: SECRET, cookieName: "sid", cookieOptions: { secure: false, httpOnly: true, sameSite: "lax", path: "/" } };

const server = tuneServer(
	http.createServer(async (req, res) => {
		try {
			res.setHeader("content-type", "text/plain");
			switch (req.url) {
				case "/untouched":
					res.end("ok");
					return;
				case "/counter": {
					const session = await getIronSession(req, res, options);
					session.count = (session.count ?? 0) + 1;
					await session.save();
					res.end(String(session.count));
					return;
				}
				case "/read": {
					const session = await getIronSession(req, res, options);
					res.end(String(session.count ?? 0));
					return;
				}
				case "/login":
				case "/create": {
					const session = await getIronSession(req, res, options);
					objectLogin(session);
					await session.save();
					res.end("ok");
					return;
				}
			}
			res.statusCode = 404;
			res.end();
		} catch (error) {
			console.error(error);
			res.statusCode = 500;
			res.end();
		}
	}),
);
await ready(listenNode(server));
