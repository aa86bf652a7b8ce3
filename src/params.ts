/**
 * Reads the protocol parameters of resumable.js and flow.js from the query string and form fields
 * (docs/protocol.md §1-2). Pure: no validation beyond "is it there and is it a decimal integer".
 *
 * @module
 */

/** Names of the protocol parameters; configurable in resumable.js, fixed in flow.js. */
export interface ParameterNames {
  /** 1-based chunk number (`resumableChunkNumber`). */
  chunkNumber: string;
  /** Nominal chunk size the client cuts at (`resumableChunkSize`). */
  chunkSize: string;
  /** Bytes in this chunk (`resumableCurrentChunkSize`). */
  currentChunkSize: string;
  /** File size in bytes (`resumableTotalSize`). */
  totalSize: string;
  /** MIME type of the file (`resumableType`; flow.js sends none). */
  type: string;
  /** The client's upload identifier (`resumableIdentifier`). */
  identifier: string;
  /** Original file name (`resumableFilename`). */
  fileName: string;
  /** Path within a dropped folder (`resumableRelativePath`). */
  relativePath: string;
  /** Chunk count the client computed (`resumableTotalChunks`); a hint only. */
  totalChunks: string;
}

/** Which client family a request came from; it picks the status table (docs/protocol.md §4.3). */
export type Dialect = "resumable" | "flow";

function namesWithPrefix(prefix: string): ParameterNames {
  return {
    chunkNumber: `${prefix}ChunkNumber`,
    chunkSize: `${prefix}ChunkSize`,
    currentChunkSize: `${prefix}CurrentChunkSize`,
    totalSize: `${prefix}TotalSize`,
    type: `${prefix}Type`,
    identifier: `${prefix}Identifier`,
    fileName: `${prefix}Filename`,
    relativePath: `${prefix}RelativePath`,
    totalChunks: `${prefix}TotalChunks`,
  };
}

/** resumable.js defaults (`R:42-50`). */
export const RESUMABLE_NAMES: ParameterNames = namesWithPrefix("resumable");
/** flow.js names, not configurable in the client (`F:1281-1291`). */
export const FLOW_NAMES: ParameterNames = namesWithPrefix("flow");

/** Raw parameter values of one request, as strings, before validation. */
export interface RawParams {
  dialect: Dialect;
  chunkNumber?: string;
  chunkSize?: string;
  currentChunkSize?: string;
  totalSize?: string;
  type?: string;
  identifier?: string;
  fileName?: string;
  relativePath?: string;
  totalChunks?: string;
}

/** Where parameter values come from, in order of precedence. */
export interface ParamSource {
  get(name: string): string | undefined;
}

/** A source over URL search params, then an optional form (first string value wins). */
export function paramSource(url: URL, form?: FormData): ParamSource {
  return {
    get(name) {
      const fromQuery = url.searchParams.get(name);
      if (fromQuery !== null) return fromQuery;
      const fromForm = form?.get(name);
      return typeof fromForm === "string" ? fromForm : undefined;
    },
  };
}

/** A source over a plain record, used by the streaming multipart reader. */
export function recordSource(
  url: URL,
  fields: ReadonlyMap<string, string>,
): ParamSource {
  return {
    get(name) {
      return url.searchParams.get(name) ?? fields.get(name);
    },
  };
}

/** How the handler looks parameters up: custom names, or both presets tried in turn. */
export interface ParamNaming {
  /** Prefix for every name, resumable.js `parameterNamespace`. */
  namespace: string;
  /** Names given by the user; when set, only these are tried. */
  custom?: ParameterNames;
}

function read(
  source: ParamSource,
  names: ParameterNames,
  prefix: string,
  dialect: Dialect,
): RawParams {
  const get = (name: string) => source.get(prefix + name);
  return {
    dialect,
    chunkNumber: get(names.chunkNumber),
    chunkSize: get(names.chunkSize),
    currentChunkSize: get(names.currentChunkSize),
    totalSize: get(names.totalSize),
    type: get(names.type),
    identifier: get(names.identifier),
    fileName: get(names.fileName),
    relativePath: get(names.relativePath),
    totalChunks: get(names.totalChunks),
  };
}

/**
 * Reads the parameters, recognising the dialect: resumable names first (with the namespace), then
 * flow names. A request that carries neither identifier is read as resumable, so the error names
 * the parameters a resumable.js user configured.
 */
export function readParams(
  source: ParamSource,
  naming: ParamNaming,
): RawParams {
  if (naming.custom) {
    return read(source, naming.custom, naming.namespace, "resumable");
  }
  const resumable = read(
    source,
    RESUMABLE_NAMES,
    naming.namespace,
    "resumable",
  );
  if (
    resumable.identifier !== undefined || resumable.chunkNumber !== undefined
  ) return resumable;
  const flow = read(source, FLOW_NAMES, "", "flow");
  if (flow.identifier !== undefined || flow.chunkNumber !== undefined) {
    return flow;
  }
  return resumable;
}

/** True when the request names any parameter at all, i.e. it is meant for this handler. */
export function hasAnyParam(params: RawParams): boolean {
  return params.identifier !== undefined || params.chunkNumber !== undefined ||
    params.totalSize !== undefined;
}
