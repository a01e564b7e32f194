/** The shim's listening socket: a name held by another process is waited for, up to a limit. */

import assert from "node:assert/strict";
import {
  acceptOne,
  closeFd,
  listenAbstract,
  listenAbstractWaiting,
  openFile,
  receive,
  send,
  waitReadable,
  wake,
  wakePipe,
} from "./socket.ts";

/** A child process that listens on `name`, says so, and exits after `holdMs`. */
async function holdName(name: string, holdMs: number): Promise<Deno.ChildProcess> {
  const code = `
    import { listenAbstract } from ${JSON.stringify(new URL("./socket.ts", import.meta.url).href)};
    listenAbstract(${JSON.stringify(name)});
    console.log("held");
    setTimeout(() => Deno.exit(0), ${holdMs});
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("held")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the holder exited before listening");
    text += value;
  }
  reader.releaseLock();
  return child;
}

Deno.test("shim socket: a name in use fails at once, or is waited for until its holder goes", async () => {
  const name = `skyfs-shim-test-${crypto.randomUUID()}`;
  const child = await holdName(name, 700);
  try {
    assert.throws(() => listenAbstract(name), (e: Error & { errno?: number }) => e.errno === 98);
    assert.throws(
      () => listenAbstractWaiting(name, 50),
      (e: Error) => /address in use/.test(e.message),
    );
    const fd = listenAbstractWaiting(name, 20_000);
    assert.ok(fd >= 0);
    closeFd(fd);
  } finally {
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
});

/** A python3 SEQPACKET client of `name`: connects, prints "up", then sends each line it reads
 * from stdin as one message, and exits (closing the socket) at the end of stdin. */
function client(name: string): Deno.ChildProcess {
  const code = [
    "import socket, sys",
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)",
    `s.connect("\\0" + ${JSON.stringify(name)})`,
    "print('up', flush=True)",
    "for line in sys.stdin: s.send(line.strip().encode())",
  ].join("\n");
  return new Deno.Command("python3", { args: ["-c", code], stdin: "piped", stdout: "piped" })
    .spawn();
}

Deno.test("shim socket: the kernel's errno from each call (EAGAIN, EPIPE, EBADF, ENOENT, EISDIR)", async () => {
  const name = `skyfs-shim-test-${crypto.randomUUID()}`;
  const listenFd = listenAbstract(name);
  const child = client(name);
  const writer = child.stdin.getWriter();
  let fd: number | undefined;
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.equal((await reader.read()).value?.trim(), "up");
    reader.releaseLock();
    fd = acceptOne(listenFd);
    assert.ok(fd !== undefined && fd >= 0);
    assert.equal(acceptOne(listenFd), undefined); // EAGAIN: nobody else is waiting
    assert.equal(receive(fd), "again"); // EAGAIN: nothing sent yet
    await writer.write(new TextEncoder().encode("hello\n"));
    assert.ok((await waitReadable([fd], 10_000)).has(fd));
    const got = receive(fd);
    assert.ok(typeof got === "object");
    assert.equal(new TextDecoder().decode(got.data), "hello");
    assert.equal(got.credentials?.pid, child.pid);
    assert.equal(send(fd, new TextEncoder().encode("reply")), 0);
    await writer.close();
    await child.status;
    assert.equal(receive(fd), "closed"); // end of stream
    assert.equal(send(fd, new TextEncoder().encode("late")), -32); // EPIPE (MSG_NOSIGNAL)
    closeFd(fd);
    assert.equal(send(fd, new TextEncoder().encode("gone")), -9); // EBADF
    assert.equal(receive(fd), "closed"); // EBADF
    fd = undefined;
  } finally {
    if (fd !== undefined) closeFd(fd);
    closeFd(listenFd);
    await writer.close().catch(() => {});
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
  assert.equal(openFile(`/nonexistent-${crypto.randomUUID()}`, 0), -2); // ENOENT
  assert.equal(openFile("/", 1 /* O_WRONLY */), -21); // EISDIR
  const pipe = wakePipe();
  wake(pipe.writeFd);
  assert.ok((await waitReadable([pipe.readFd], 10_000)).has(pipe.readFd));
  closeFd(pipe.readFd);
  closeFd(pipe.writeFd);
});
