// The best peer: @tus/server with @tus/file-store under Node, as its README sets it up.
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const tus = new Server({
  path: "/files",
  datastore: new FileStore({ directory: process.env.DIR ?? "./tus-files" }),
});
const server = http.createServer((req, res) => tus.handle(req, res));
server.listen(
  0,
  "127.0.0.1",
  () => console.log(`listening ${server.address().port}`),
);
