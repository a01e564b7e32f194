/**
 * S3 (or any S3-compatible server) as the backend store, through the AWS SDK v3 S3 client.
 * Path-style addressing, so a local server (s3rver in the tests, MinIO, Ceph RGW) works too.
 * @module
 */

// The lead owns deno.json: move this to its imports as "@aws-sdk/client-s3" (then drop the ignore).
import * as s3 from "@aws-sdk/client-s3";
import type { BackendStore } from "./backend.ts";

export interface S3BackendOptions {
  bucket: string;
  /** e.g. http://127.0.0.1:9000; absent: AWS. */
  endpoint?: string;
  /** Default us-east-1. */
  region?: string;
  /** Default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Key prefix inside the bucket. Default "". */
  prefix?: string;
}

export class S3Backend implements BackendStore {
  readonly kind = "s3";
  readonly #client: s3.S3Client;
  readonly #bucket: string;
  readonly #prefix: string;

  constructor(options: S3BackendOptions) {
    const accessKeyId = options.accessKeyId ?? Deno.env.get("AWS_ACCESS_KEY_ID");
    const secretAccessKey = options.secretAccessKey ?? Deno.env.get("AWS_SECRET_ACCESS_KEY");
    if (!accessKeyId || !secretAccessKey) {
      throw new RangeError(
        `S3 backend for bucket "${options.bucket}" has no credentials: ` +
          "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
      );
    }
    this.#client = new s3.S3Client({
      endpoint: options.endpoint,
      region: options.region ?? "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId, secretAccessKey },
    });
    this.#bucket = options.bucket;
    this.#prefix = options.prefix ?? "";
  }

  /** `s3://bucket[/prefix]?endpoint=http://h:p&region=r` */
  static fromUrl(spec: string): S3Backend {
    const url = new URL(spec);
    if (!url.hostname) throw new RangeError(`--backend "${spec}" names no bucket: s3://BUCKET`);
    return new S3Backend({
      bucket: url.hostname,
      prefix: url.pathname.replace(/^\/+/, ""),
      endpoint: url.searchParams.get("endpoint") ?? undefined,
      region: url.searchParams.get("region") ?? undefined,
    });
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    await this.#client.send(
      new s3.PutObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key, Body: data }),
    );
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    try {
      const out = await this.#client.send(
        new s3.GetObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }),
      );
      return await out.Body!.transformToByteArray();
    } catch (error) {
      const name = (error as { name?: string }).name;
      if (name === "NoSuchKey" || name === "NotFound") return undefined;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await this.#client.send(
      new s3.DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }),
    );
  }

  async list(prefix: string): Promise<{ key: string; modifiedMs: number }[]> {
    const out: { key: string; modifiedMs: number }[] = [];
    let token: string | undefined;
    do {
      const page = await this.#client.send(
        new s3.ListObjectsV2Command({
          Bucket: this.#bucket,
          Prefix: this.#prefix + prefix,
          ContinuationToken: token,
        }),
      );
      for (const object of page.Contents ?? []) {
        out.push({
          key: object.Key!.slice(this.#prefix.length),
          modifiedMs: object.LastModified?.getTime() ?? 0,
        });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  close(): Promise<void> {
    this.#client.destroy();
    return Promise.resolve();
  }
}
