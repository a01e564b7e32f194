/**
 * The interface every I/O engine implements. Offsets and lengths are byte counts (numbers, files up
 * to 2^53). Every operation resolves with its result or rejects with an FsError carrying the errno.
 * A buffer passed in must not be touched by the caller until the returned promise settles.
 * @module
 */

export interface StatxResult {
  size: number;
  /** 512-byte blocks allocated. */
  blocks: number;
  mode: number;
  ino: number;
}

export interface IoEngine {
  readonly kind: "io_uring" | "portable";
  /** open(2) relative to the working directory; resolves to an fd. */
  open(path: string, flags: number, mode?: number): Promise<number>;
  close(fd: number): Promise<void>;
  /** `fd` was closed without the engine (a synchronous libc close): forget what the engine
   * learned about the fd number, which the next open may reuse. Optional: engines that learn
   * nothing per fd leave it out. */
  forgetFd?(fd: number): void;
  /** pread(2): resolves to the bytes read (short only at end of file). */
  read(fd: number, into: Uint8Array, offset: number): Promise<number>;
  /** pwrite(2): resolves to the bytes written. */
  write(fd: number, data: Uint8Array, offset: number): Promise<number>;
  readv(fd: number, into: Uint8Array[], offset: number): Promise<number>;
  writev(fd: number, data: Uint8Array[], offset: number): Promise<number>;
  fsync(fd: number, options?: { datasync?: boolean }): Promise<void>;
  /** Write then fsync, linked so that one submission does both where the engine can. */
  writeAndSync(fd: number, data: Uint8Array, offset: number): Promise<number>;
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  statx(path: string): Promise<StatxResult>;
  unlink(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  /** Waits for (or cancels) what is in flight, then frees the ring. */
  shutdown(): Promise<void>;
}
