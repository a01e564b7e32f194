/**
 * The backend store for cluster mode (DESIGN.md section 5): where chunk objects live durably.
 * A chunk written is an immutable object named by (inode, chunk index, version); nothing ever
 * overwrites an object, so a reader holding an old chunk map still reads a whole old version.
 * Implementations: a directory (a shared disk, or a directory shared by nodes on one machine)
 * here, and S3 in backend_s3.ts.
 * @module
 */

import { join } from "node:path";

/** The store of immutable objects. Every method may reject (EIO at the edges). */
export interface BackendStore {
  readonly kind: string;
  /** Store `data` under `key` durably before resolving (a crash after it keeps the object). */
  put(key: string, data: Uint8Array): Promise<void>;
  /** The object's bytes, or undefined if there is none. */
  get(key: string): Promise<Uint8Array | undefined>;
  /** Remove the object (nothing if absent). */
  delete(key: string): Promise<void>;
  /** Keys under `prefix` with their last-modified time in ms since the epoch. */
  list(prefix: string): Promise<{ key: string; modifiedMs: number }[]>;
  close(): Promise<void>;
}

/** Chunk object names: `c/<ino hex>/<index>/<version>`; listing `c/<ino hex>/` finds a file's. */
export function chunkObjectKey(ino: number, index: number, version: string): string {
  return `c/${ino.toString(16)}/${index}/${version}`;
}

/** The inverse of chunkObjectKey; undefined for a foreign key. */
export function parseChunkObjectKey(
  key: string,
): { ino: number; index: number; version: string } | undefined {
  const match = /^c\/([0-9a-f]+)\/(\d+)\/([0-9a-z-]+)$/.exec(key);
  if (!match) return undefined;
  return { ino: parseInt(match[1], 16), index: Number(match[2]), version: match[3] };
}

/**
 * Objects as files under a directory. A put writes a temporary file, fsyncs it, renames it into
 * place and fsyncs the directory, so a reader (any node) sees either no object or all of it.
 */
export class DirBackend implements BackendStore {
  readonly kind = "dir";
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  static async open(root: string): Promise<DirBackend> {
    await Deno.mkdir(join(root, "tmp"), { recursive: true });
    return new DirBackend(root);
  }

  #path(key: string): string {
    if (key.includes("..") || key.startsWith("/")) {
      throw new RangeError(`Backend key ${JSON.stringify(key)} must be relative without ".."`);
    }
    return join(this.root, "o", key);
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    const path = this.#path(key);
    const dir = path.slice(0, path.lastIndexOf("/"));
    await Deno.mkdir(dir, { recursive: true });
    const tmp = join(this.root, "tmp", `${crypto.randomUUID()}`);
    const file = await Deno.open(tmp, { write: true, createNew: true });
    try {
      let written = 0;
      while (written < data.length) written += await file.write(data.subarray(written));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
    const dirFile = await Deno.open(dir, { read: true });
    try {
      await dirFile.sync();
    } finally {
      dirFile.close();
    }
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    try {
      return await Deno.readFile(this.#path(key));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await Deno.remove(this.#path(key));
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }

  async list(prefix: string): Promise<{ key: string; modifiedMs: number }[]> {
    const out: { key: string; modifiedMs: number }[] = [];
    const base = join(this.root, "o");
    const walk = async (rel: string): Promise<void> => {
      let entries: Deno.DirEntry[];
      try {
        entries = await Array.fromAsync(Deno.readDir(join(base, rel)));
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return;
        throw error;
      }
      for (const entry of entries) {
        const key = rel === "" ? entry.name : `${rel}/${entry.name}`;
        // Descend only where the prefix can still match.
        if (!key.startsWith(prefix) && !prefix.startsWith(key)) continue;
        if (entry.isDirectory) await walk(key);
        else if (key.startsWith(prefix)) {
          const st = await Deno.stat(join(base, key));
          out.push({ key, modifiedMs: st.mtime?.getTime() ?? 0 });
        }
      }
    };
    await walk("");
    return out.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  }

  async close(): Promise<void> {}
}

/**
 * Open a backend from a URL: a path or `dir:///path` for DirBackend, or
 * `s3://bucket?endpoint=http://host:port&region=...` (credentials from AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY) for S3.
 */
export async function openBackend(spec: string): Promise<BackendStore> {
  if (spec.startsWith("s3://")) {
    const { S3Backend } = await import("./backend_s3.ts");
    return S3Backend.fromUrl(spec);
  }
  const path = spec.startsWith("dir://") ? spec.slice("dir://".length) : spec;
  if (!path.startsWith("/")) {
    throw new RangeError(`--backend "${spec}" is neither an absolute path, dir:///path nor s3://`);
  }
  return await DirBackend.open(path);
}
