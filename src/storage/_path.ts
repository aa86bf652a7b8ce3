// Paths of the file-system storage. Not `node:path`: under Deno, importing it loads the Node
// compatibility layer, about 5.5 MiB of resident memory for every server, and its `join`
// normalises each path it builds. The storage only appends names it has checked (upload keys, file
// ids, sanitised file names, its own fixed names) to a root made absolute and normal once, so
// joining with the separator is enough.
import { currentDirectory, windowsPaths } from "./_fs_platform.ts";

const SEPARATOR = windowsPaths ? "\\" : "/";

/** `parent` followed by each of `names`, which must be single path segments. */
export function joinPath(parent: string, ...names: string[]): string {
  let path = parent;
  for (const name of names) path = path.endsWith(SEPARATOR) ? path + name : path + SEPARATOR + name;
  return path;
}

/** `path` made absolute against the working directory, with `.`, `..` and repeated separators resolved. */
export function absolutePath(path: string, windows = windowsPaths): string {
  const separator = windows ? "\\" : "/";
  const isAbsolute = windows ? /^(?:[A-Za-z]:)?[\\/]/.test(path) : path.startsWith("/");
  const full = isAbsolute ? path : `${currentDirectory()}${separator}${path}`;
  const [root, ...rest] = full.split(windows ? /[\\/]+/ : /\/+/);
  const segments: string[] = [];
  for (const segment of rest) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  // `root` is "" for a path that starts with the separator, or a drive such as "C:".
  const unc = windows && /^[\\/]{2}/.test(full) ? separator : "";
  return `${unc}${root}${separator}${segments.join(separator)}`;
}
