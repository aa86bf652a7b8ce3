/**
 * Turns raw parameters into a checked {@linkcode ChunkRequest}. Every number is computed or checked
 * here; nothing the client says about sizes is trusted unverified. Pure.
 *
 * @module
 */

import { ResumableError } from "./errors.ts";
import { allowedChunkSizes, type ChunkLayout, chunkLayout } from "./layout.ts";
import type { Dialect, RawParams } from "./params.ts";

/** Limits applied to every request; see the handler options for their meaning. */
export interface Limits {
  maxFileSize: number;
  maxChunkSize: number;
  maxChunks: number;
  maxIdentifierLength: number;
  maxNameLength: number;
}

/** The upload-wide facts every chunk of one upload must agree on. */
export interface UploadFacts {
  identifier: string;
  fileName: string;
  relativePath: string;
  type: string;
  totalSize: number;
  chunkSize: number;
}

/** A validated test or upload request for one chunk. */
export interface ChunkRequest extends UploadFacts {
  dialect: Dialect;
  chunkNumber: number;
  layout: ChunkLayout;
  /** Sizes this chunk may have (one per client layout that has it). */
  allowedSizes: number[];
  /** The size the client declared for this chunk, when it sent one. */
  declaredSize?: number;
  /** The chunk count the client declared, when it sent one; a hint only (docs/protocol.md §5). */
  declaredTotalChunks?: number;
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;

function integer(value: string | undefined, label: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  const trimmed = value.trim();
  if (!DECIMAL.test(trimmed)) {
    throw new ResumableError(
      "invalid_parameters",
      `Parameter ${label} must be a non-negative integer, got "${clip(value)}"`,
    );
  }
  const number = Number(trimmed);
  if (!Number.isSafeInteger(number)) {
    throw new ResumableError(
      "invalid_parameters",
      `Parameter ${label} is too large: "${clip(value)}"`,
    );
  }
  return number;
}

function required(value: number | undefined, label: string): number {
  if (value === undefined) {
    throw new ResumableError(
      "invalid_parameters",
      `Missing parameter ${label}`,
    );
  }
  return value;
}

/** A size for people: "1.5 MiB". */
export function humanBytes(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} bytes` : `${Number(value.toFixed(1))} ${units[unit]}`;
}

function clip(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

function checkText(
  value: string,
  label: string,
  maxLength: number,
  code: "invalid_identifier" | "invalid_parameters",
) {
  if (value.length > maxLength) {
    throw new ResumableError(
      code,
      `Parameter ${label} is ${value.length} characters long, the limit is ${maxLength}`,
    );
  }
  if (CONTROL.test(value)) {
    throw new ResumableError(
      code,
      `Parameter ${label} contains control characters`,
    );
  }
}

/**
 * Validates the parameters of a test or upload request for one chunk.
 *
 * @throws {ResumableError} with a specific code when a parameter is missing, malformed or out of range.
 */
export function validateChunkRequest(
  raw: RawParams,
  limits: Limits,
): ChunkRequest {
  const p = raw.dialect === "flow" ? "flow" : "resumable";
  const identifier = raw.identifier ?? "";
  if (identifier === "") {
    throw new ResumableError(
      "invalid_identifier",
      `Missing parameter ${p}Identifier`,
    );
  }
  checkText(
    identifier,
    `${p}Identifier`,
    limits.maxIdentifierLength,
    "invalid_identifier",
  );

  const chunkNumber = required(
    integer(raw.chunkNumber, `${p}ChunkNumber`),
    `${p}ChunkNumber`,
  );
  const chunkSize = required(
    integer(raw.chunkSize, `${p}ChunkSize`),
    `${p}ChunkSize`,
  );
  const totalSize = required(
    integer(raw.totalSize, `${p}TotalSize`),
    `${p}TotalSize`,
  );
  const declaredSize = integer(raw.currentChunkSize, `${p}CurrentChunkSize`);
  const declaredTotalChunks = integer(raw.totalChunks, `${p}TotalChunks`);

  const fileName = raw.fileName ?? "";
  checkText(
    fileName,
    `${p}Filename`,
    limits.maxNameLength,
    "invalid_parameters",
  );
  const relativePath = raw.relativePath ?? fileName;
  checkText(
    relativePath,
    `${p}RelativePath`,
    limits.maxNameLength,
    "invalid_parameters",
  );
  const type = raw.type ?? "";
  checkText(type, `${p}Type`, 255, "invalid_parameters");

  if (chunkSize < 1) {
    throw new ResumableError(
      "invalid_parameters",
      `Parameter ${p}ChunkSize must be at least 1`,
    );
  }
  if (chunkSize > limits.maxChunkSize) {
    throw new ResumableError(
      "chunk_too_large",
      `Chunk size ${chunkSize} is above the limit of ${limits.maxChunkSize} bytes`,
    );
  }
  if (totalSize > limits.maxFileSize) {
    throw new ResumableError(
      "file_too_large",
      `File is ${totalSize} bytes (${humanBytes(totalSize)}), the limit is ${limits.maxFileSize} bytes (${
        humanBytes(limits.maxFileSize)
      })`,
    );
  }
  const layout = chunkLayout(totalSize, chunkSize);
  if (layout.floorCount > limits.maxChunks) {
    throw new ResumableError(
      "too_many_chunks",
      `File of ${totalSize} bytes in chunks of ${chunkSize} needs ${layout.floorCount} chunks, the limit is ${limits.maxChunks}`,
    );
  }
  // resumable.js 1.1.0 may under-report the count while it is still building its chunk list
  // (docs/protocol.md §5), so only a count above what either layout makes is an error.
  if (
    declaredTotalChunks !== undefined && declaredTotalChunks > layout.ceilCount
  ) {
    throw new ResumableError(
      "invalid_parameters",
      `Parameter ${p}TotalChunks is ${declaredTotalChunks}, but a file of ${totalSize} bytes has at most ${layout.ceilCount} chunks of ${chunkSize}`,
    );
  }
  const allowedSizes = allowedChunkSizes(layout, chunkNumber);
  if (allowedSizes.length === 0) {
    throw new ResumableError(
      "chunk_out_of_range",
      `Chunk number ${chunkNumber} is out of range: a file of ${totalSize} bytes has ${layout.ceilCount} chunks of ${chunkSize}`,
    );
  }
  if (declaredSize !== undefined && !allowedSizes.includes(declaredSize)) {
    throw new ResumableError(
      "chunk_size_mismatch",
      `Chunk ${chunkNumber} declares ${declaredSize} bytes, expected ${allowedSizes.join(" or ")}`,
    );
  }
  return {
    dialect: raw.dialect,
    identifier,
    fileName,
    relativePath,
    type,
    totalSize,
    chunkSize,
    chunkNumber,
    layout,
    allowedSizes: declaredSize !== undefined ? [declaredSize] : allowedSizes,
    declaredSize,
    declaredTotalChunks,
  };
}

/** The largest body this chunk may have. */
export function maxChunkBytes(request: ChunkRequest): number {
  return Math.max(...request.allowedSizes);
}
