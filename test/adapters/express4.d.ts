// `express4` is the npm alias of express@4, used to run the adapter suite on Express 4 too.
// It ships no types of its own; the Express 5 types cover the part of the API the tests use.
declare module "express4" {
	import express from "express";
	export default express;
}
