import { describe, it, expect } from 'vitest';
import {
  Req,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  MAX_MEM_SLOTS,
  MAX_PAYLOAD_SIZE,
  REPLY_FLAGS,
  decodeHeader,
  decodeReplyConfig,
  decodeReplyU64,
  decodeReplyVringState,
  decodeRequest,
  encodeConfig,
  encodeHeader,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  hasReplyBody,
  isKnownRequest,
  requestFlags,
  requestName,
  type Decoded,
  type RequestBody,
} from '../src/vhost-user/messages.js';

/** Bytes from a hex string with optional spaces. */
function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

function expectOk<T>(d: Decoded<T>): T {
  if (!d.ok) throw new Error(`expected ok, got: ${d.reason}`);
  return d.value;
}

function expectFail<T>(d: Decoded<T>, pattern: RegExp): void {
  expect(d.ok).toBe(false);
  if (!d.ok) expect(d.reason).toMatch(pattern);
}

describe('header', () => {
  it('decodes a GET_FEATURES request header (byte literal)', () => {
    const h = expectOk(decodeHeader(hex('01000000 01000000 00000000')));
    expect(h).toEqual({ request: 1, flags: 1, size: 0 });
  });

  it('decodes NEED_REPLY and encodes byte-exactly', () => {
    const bytes = hex('05000000 09000000 28000000');
    expect(expectOk(decodeHeader(bytes))).toEqual({ request: Req.SET_MEM_TABLE, flags: 1 | FLAG_NEED_REPLY, size: 40 });
    expect(toHex(encodeHeader(Req.SET_MEM_TABLE, requestFlags(true), 40))).toBe(toHex(bytes));
  });

  it('reply headers carry REPLY (0x5)', () => {
    expect(toHex(encodeHeader(Req.GET_FEATURES, REPLY_FLAGS, 8))).toBe('010000000500000008000000');
    expect(expectOk(decodeHeader(hex('01000000 05000000 08000000'), 'reply')).flags).toBe(5);
  });

  it('refuses short, wrong version, reserved flags, wrong direction, oversized', () => {
    expectFail(decodeHeader(hex('01000000 01000000 0000')), /short header/);
    expectFail(decodeHeader(hex('01000000 02000000 00000000')), /version 2/);
    expectFail(decodeHeader(hex('01000000 00000000 00000000')), /version 0/);
    expectFail(decodeHeader(hex('01000000 11000000 00000000')), /reserved flag/);
    expectFail(decodeHeader(hex('01000000 01000080 00000000')), /reserved flag/);
    expectFail(decodeHeader(hex('01000000 05000000 00000000'), 'request'), /REPLY flag set/);
    expectFail(decodeHeader(hex('01000000 01000000 00000000'), 'reply'), /REPLY flag missing/);
    expectFail(decodeHeader(encodeHeader(1, 1, MAX_PAYLOAD_SIZE + 1)), /above maximum/);
    expect(decodeHeader(encodeHeader(1, 1, MAX_PAYLOAD_SIZE)).ok).toBe(true);
    expectFail(decodeHeader(encodeHeader(1, 1, 0xffffffff)), /above maximum/);
  });

  it('encodeMessage concatenates header and payload', () => {
    const m = encodeMessage(Req.SET_FEATURES, requestFlags(false), encodeU64(0x1_4000_0000n));
    expect(toHex(m)).toBe('02000000' + '01000000' + '08000000' + '0000004001000000');
  });

  it('names requests', () => {
    expect(requestName(Req.SET_BACKEND_REQ_FD)).toBe('SET_BACKEND_REQ_FD');
    expect(requestName(40)).toBe('GET_STATUS');
    expect(requestName(999)).toBe('UNKNOWN(999)');
    for (let c = 1; c <= 40; c++) expect(isKnownRequest(c)).toBe(true);
    expect(isKnownRequest(0)).toBe(false);
    expect(hasReplyBody(Req.GET_VRING_BASE)).toBe(true);
    expect(hasReplyBody(Req.SET_VRING_BASE)).toBe(false);
  });
});

describe('request payloads: byte-literal fixtures', () => {
  const cases: Array<{ name: string; code: number; payload: string; fds: number; want: RequestBody }> = [
    { name: 'GET_FEATURES', code: Req.GET_FEATURES, payload: '', fds: 0, want: { type: 'empty' } },
    { name: 'SET_OWNER', code: Req.SET_OWNER, payload: '', fds: 0, want: { type: 'empty' } },
    { name: 'RESET_OWNER', code: Req.RESET_OWNER, payload: '', fds: 0, want: { type: 'empty' } },
    { name: 'GET_PROTOCOL_FEATURES', code: Req.GET_PROTOCOL_FEATURES, payload: '', fds: 0, want: { type: 'empty' } },
    { name: 'GET_QUEUE_NUM', code: Req.GET_QUEUE_NUM, payload: '', fds: 0, want: { type: 'empty' } },
    { name: 'GET_MAX_MEM_SLOTS', code: Req.GET_MAX_MEM_SLOTS, payload: '', fds: 0, want: { type: 'empty' } },
    { name: 'GET_STATUS', code: Req.GET_STATUS, payload: '', fds: 0, want: { type: 'empty' } },
    { name: 'SET_BACKEND_REQ_FD', code: Req.SET_BACKEND_REQ_FD, payload: '', fds: 1, want: { type: 'empty' } },
    {
      name: 'SET_FEATURES (VERSION_1 | PROTOCOL_FEATURES | bit 63)',
      code: Req.SET_FEATURES,
      payload: '00000040 01000080',
      fds: 0,
      want: { type: 'features', value: (1n << 63n) | (1n << 32n) | (1n << 30n) },
    },
    {
      name: 'SET_PROTOCOL_FEATURES',
      code: Req.SET_PROTOCOL_FEATURES,
      payload: '09820100 00000000',
      fds: 0,
      want: { type: 'features', value: 0x18209n },
    },
    { name: 'SET_STATUS', code: Req.SET_STATUS, payload: '0f000000 00000000', fds: 0, want: { type: 'u64', value: 15 } },
    { name: 'SET_VRING_NUM', code: Req.SET_VRING_NUM, payload: '01000000 00010000', fds: 0, want: { type: 'vring-state', index: 1, num: 256 } },
    { name: 'SET_VRING_BASE', code: Req.SET_VRING_BASE, payload: '00000000 34120000', fds: 0, want: { type: 'vring-state', index: 0, num: 0x1234 } },
    { name: 'GET_VRING_BASE', code: Req.GET_VRING_BASE, payload: '01000000 00000000', fds: 0, want: { type: 'vring-state', index: 1, num: 0 } },
    { name: 'SET_VRING_ENABLE', code: Req.SET_VRING_ENABLE, payload: '00000000 01000000', fds: 0, want: { type: 'vring-state', index: 0, num: 1 } },
    { name: 'SET_VRING_KICK with fd', code: Req.SET_VRING_KICK, payload: '01000000 00000000', fds: 1, want: { type: 'vring-fd', index: 1, noFd: false } },
    { name: 'SET_VRING_CALL no fd', code: Req.SET_VRING_CALL, payload: '00010000 00000000', fds: 0, want: { type: 'vring-fd', index: 0, noFd: true } },
    { name: 'SET_VRING_ERR', code: Req.SET_VRING_ERR, payload: 'ff000000 00000000', fds: 1, want: { type: 'vring-fd', index: 255, noFd: false } },
    {
      name: 'SET_VRING_ADDR',
      code: Req.SET_VRING_ADDR,
      payload:
        '01000000 01000000' + // index 1, flags LOG
        '00100000 00000000' + // desc 0x1000
        '00300000 00000000' + // used 0x3000
        '00200000 00000000' + // avail 0x2000
        '00000000 00000000', // log
      fds: 0,
      want: { type: 'vring-addr', index: 1, flags: 1, descUser: 0x1000, usedUser: 0x3000, availUser: 0x2000, logAddr: 0 },
    },
    {
      name: 'SET_MEM_TABLE (2 regions)',
      code: Req.SET_MEM_TABLE,
      payload:
        '02000000 00000000' +
        '00000000 00000000  00001000 00000000  0000007f 00000000  00000000 00000000' +
        '00001000 00000000  00001000 00000000  0000107f 00000000  00000000 00000000',
      fds: 2,
      want: {
        type: 'mem-table',
        regions: [
          { guestAddr: 0, size: 0x100000, userAddr: 0x7f000000, mmapOffset: 0 },
          { guestAddr: 0x100000, size: 0x100000, userAddr: 0x7f100000, mmapOffset: 0 },
        ],
      },
    },
    {
      name: 'ADD_MEM_REG',
      code: Req.ADD_MEM_REG,
      payload: '00000000 00000000' + '00000000 01000000  00000100 00000000  00000000 00550000  00100000 00000000',
      fds: 1,
      want: { type: 'mem-region', region: { guestAddr: 0x1_0000_0000, size: 0x10000, userAddr: 0x5500_0000_0000, mmapOffset: 0x1000 } },
    },
    {
      name: 'REM_MEM_REG (no fd)',
      code: Req.REM_MEM_REG,
      payload: '00000000 00000000' + '00000000 01000000  00000100 00000000  00000000 00550000  00000000 00000000',
      fds: 0,
      want: { type: 'mem-region', region: { guestAddr: 0x1_0000_0000, size: 0x10000, userAddr: 0x5500_0000_0000, mmapOffset: 0 } },
    },
    {
      name: 'GET_CONFIG (6 bytes at 0)',
      code: Req.GET_CONFIG,
      payload: '00000000 06000000 00000000 000000000000',
      fds: 0,
      want: { type: 'config', offset: 0, size: 6, flags: 0, data: new Uint8Array(6) },
    },
    {
      name: 'SET_CONFIG (migration flag)',
      code: Req.SET_CONFIG,
      payload: '0a000000 02000000 01000000 dc05',
      fds: 0,
      want: { type: 'config', offset: 10, size: 2, flags: 1, data: hex('dc05') },
    },
  ];

  for (const c of cases) {
    it(`decodes ${c.name}`, () => {
      expect(expectOk(decodeRequest(c.code, hex(c.payload), c.fds))).toEqual(c.want);
    });
  }

  it('encoders produce the same bytes', () => {
    expect(toHex(encodeU64((1n << 63n) | (1n << 32n) | (1n << 30n)))).toBe('0000004001000080');
    expect(toHex(encodeVringState(1, 256))).toBe('0100000000010000');
    expect(toHex(encodeVringFd(0, true))).toBe('0001000000000000');
    expect(toHex(encodeVringFd(255, false))).toBe('ff00000000000000');
    expect(toHex(encodeVringAddr({ index: 1, flags: 1, descUser: 0x1000, usedUser: 0x3000, availUser: 0x2000, logAddr: 0 }))).toBe(
      '0100000001000000' + '0010000000000000' + '0030000000000000' + '0020000000000000' + '0000000000000000',
    );
    expect(
      toHex(
        encodeMemTable([
          { guestAddr: 0, size: 0x100000, userAddr: 0x7f000000, mmapOffset: 0 },
          { guestAddr: 0x100000, size: 0x100000, userAddr: 0x7f100000, mmapOffset: 0 },
        ]),
      ),
    ).toBe(
      '0200000000000000' +
        '0000000000000000' + '0000100000000000' + '0000007f00000000' + '0000000000000000' +
        '0000100000000000' + '0000100000000000' + '0000107f00000000' + '0000000000000000',
    );
    expect(toHex(encodeMemRegion({ guestAddr: 0x1_0000_0000, size: 0x10000, userAddr: 0x5500_0000_0000, mmapOffset: 0x1000 }))).toBe(
      '0000000000000000' + '0000000001000000' + '0000010000000000' + '0000000000550000' + '0010000000000000',
    );
    expect(toHex(encodeConfig(10, 1, hex('dc05')))).toBe('0a00000002000000' + '01000000' + 'dc05');
  });

  it('round-trips encoders through the decoder', () => {
    const regions = [
      { guestAddr: 0, size: 4096, userAddr: 0x10000, mmapOffset: 0 },
      { guestAddr: 8192, size: 4096, userAddr: 0x20000, mmapOffset: 4096 },
    ];
    expect(expectOk(decodeRequest(Req.SET_MEM_TABLE, encodeMemTable(regions), 2))).toEqual({ type: 'mem-table', regions });
    const big = 2 ** 53 - 4096 - 1;
    const r = { guestAddr: big, size: 4096, userAddr: 0, mmapOffset: 0 };
    expect(expectOk(decodeRequest(Req.ADD_MEM_REG, encodeMemRegion(r), 1))).toEqual({ type: 'mem-region', region: r });
  });
});

describe('reply payloads', () => {
  it('decodes u64, vring state and config replies', () => {
    expect(expectOk(decodeReplyU64(hex('0000004001000000')))).toBe(0x1_4000_0000n);
    expect(expectOk(decodeReplyVringState(hex('01000000 2a000000')))).toEqual({ index: 1, num: 42 });
    const cfg = expectOk(decodeReplyConfig(hex('00000000 02000000 00000000 5254')));
    expect(cfg.offset).toBe(0);
    expect(Array.from(cfg.data)).toEqual([0x52, 0x54]);
  });

  it('refuses malformed replies', () => {
    expectFail(decodeReplyU64(hex('00')), /expected 8/);
    expectFail(decodeReplyVringState(hex('0000000000')), /expected 8/);
    expectFail(decodeReplyConfig(new Uint8Array(0)), /refused/);
    expectFail(decodeReplyConfig(hex('00000000 04000000 00000000 5254')), /expected 16/);
  });
});

describe('malformed request payloads are refused with a reason', () => {
  it('wrong payload size per request', () => {
    expectFail(decodeRequest(Req.GET_FEATURES, hex('00'), 0), /payload size 1, expected 0/);
    expectFail(decodeRequest(Req.SET_FEATURES, hex('00000000'), 0), /payload size 4, expected 8/);
    expectFail(decodeRequest(Req.SET_FEATURES, new Uint8Array(16), 0), /payload size 16, expected 8/);
    expectFail(decodeRequest(Req.SET_VRING_NUM, new Uint8Array(4), 0), /expected 8/);
    expectFail(decodeRequest(Req.SET_VRING_ADDR, new Uint8Array(32), 0), /expected 40/);
    expectFail(decodeRequest(Req.SET_VRING_KICK, new Uint8Array(4), 1), /expected 8/);
    expectFail(decodeRequest(Req.SET_STATUS, new Uint8Array(0), 0), /expected 8/);
    expectFail(decodeRequest(Req.ADD_MEM_REG, new Uint8Array(32), 1), /expected 40/);
    expectFail(decodeRequest(Req.SET_MEM_TABLE, new Uint8Array(4), 0), /at least 8/);
    // nregions says 1 but two regions' worth of bytes follow
    const two = encodeMemTable([
      { guestAddr: 0, size: 4096, userAddr: 0, mmapOffset: 0 },
      { guestAddr: 4096, size: 4096, userAddr: 4096, mmapOffset: 0 },
    ]);
    two[0] = 1;
    expectFail(decodeRequest(Req.SET_MEM_TABLE, two, 1), /payload size 72, expected 40/);
    expectFail(decodeRequest(Req.GET_CONFIG, new Uint8Array(8), 0), /at least 12/);
    expectFail(decodeRequest(Req.GET_CONFIG, hex('00000000 06000000 00000000 0000'), 0), /expected 18/);
  });

  it('wrong fd counts (too many / too few)', () => {
    expectFail(decodeRequest(Req.GET_FEATURES, new Uint8Array(0), 1), /unexpected fd/);
    expectFail(decodeRequest(Req.SET_VRING_NUM, encodeVringState(0, 256), 2), /unexpected fd/);
    expectFail(decodeRequest(Req.SET_VRING_KICK, encodeVringFd(0, false), 0), /expected 1 fd\(s\), got 0/);
    expectFail(decodeRequest(Req.SET_VRING_KICK, encodeVringFd(0, false), 2), /expected 1 fd\(s\), got 2/);
    expectFail(decodeRequest(Req.SET_VRING_CALL, encodeVringFd(0, true), 1), /expected 0 fd\(s\), got 1/);
    expectFail(decodeRequest(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), 0), /expected 1 fd/);
    const table = encodeMemTable([
      { guestAddr: 0, size: 4096, userAddr: 0, mmapOffset: 0 },
      { guestAddr: 4096, size: 4096, userAddr: 4096, mmapOffset: 0 },
    ]);
    expectFail(decodeRequest(Req.SET_MEM_TABLE, table, 1), /expected 2 fd\(s\), got 1/);
    expectFail(decodeRequest(Req.SET_MEM_TABLE, table, 3), /expected 2 fd\(s\), got 3/);
    const reg = encodeMemRegion({ guestAddr: 0, size: 4096, userAddr: 0, mmapOffset: 0 });
    expectFail(decodeRequest(Req.ADD_MEM_REG, reg, 0), /expected 1 fd/);
    expectFail(decodeRequest(Req.REM_MEM_REG, reg, 2), /at most 1 fd/);
    expect(decodeRequest(Req.REM_MEM_REG, reg, 1).ok).toBe(true);
  });

  it('overflowing regions, zero sizes, overlaps, too many regions', () => {
    const at = (r: Partial<{ guestAddr: number; size: number; userAddr: number; mmapOffset: number }>) => ({
      guestAddr: 0,
      size: 4096,
      userAddr: 0x10000,
      mmapOffset: 0,
      ...r,
    });
    expectFail(decodeRequest(Req.SET_MEM_TABLE, encodeMemTable([at({ size: 0 })]), 1), /zero size/);
    expectFail(
      decodeRequest(Req.SET_MEM_TABLE, encodeMemTable([at({ guestAddr: 2 ** 53 - 4096, size: 8192 })]), 1),
      /guest address \+ size overflows/,
    );
    expectFail(
      decodeRequest(Req.ADD_MEM_REG, encodeMemRegion(at({ userAddr: 2 ** 53 - 1, size: 2 })), 1),
      /user address \+ size overflows/,
    );
    expectFail(
      decodeRequest(Req.ADD_MEM_REG, encodeMemRegion(at({ mmapOffset: 2 ** 53 - 1, size: 2 })), 1),
      /mmap offset \+ size overflows/,
    );
    // u64 wrap-around: guest 0xffff_ffff_ffff_f000 + 0x2000 wraps in u64 and is beyond 2^53 anyway
    const wrap = encodeMemRegion(at({}));
    new DataView(wrap.buffer).setBigUint64(8, 0xffff_ffff_ffff_f000n, true);
    expectFail(decodeRequest(Req.ADD_MEM_REG, wrap, 1), /above 2\^53/);
    expectFail(
      decodeRequest(Req.SET_MEM_TABLE, encodeMemTable([at({}), at({ guestAddr: 2048, userAddr: 0x20000 })]), 2),
      /overlap in guest address space/,
    );
    expectFail(
      decodeRequest(Req.SET_MEM_TABLE, encodeMemTable([at({}), at({ guestAddr: 8192, userAddr: 0x10800 })]), 2),
      /overlap in frontend address space/,
    );
    const noRegions = encodeMemTable([]);
    expectFail(decodeRequest(Req.SET_MEM_TABLE, noRegions, 0), /no regions/);
    const tooMany = new Uint8Array(8);
    new DataView(tooMany.buffer).setUint32(0, MAX_MEM_SLOTS + 1, true);
    expectFail(decodeRequest(Req.SET_MEM_TABLE, tooMany, 0), /33 regions, at most 32/);
    const huge = new Uint8Array(8);
    new DataView(huge.buffer).setUint32(0, 0xffffffff, true);
    expectFail(decodeRequest(Req.SET_MEM_TABLE, huge, 0), /at most 32/);
  });

  it('u64 values beyond 2^53 are refused; feature masks are not', () => {
    const addr = encodeVringAddr({ index: 0, flags: 0, descUser: 0, usedUser: 0, availUser: 0, logAddr: 0 });
    new DataView(addr.buffer).setBigUint64(8, 1n << 53n, true);
    expectFail(decodeRequest(Req.SET_VRING_ADDR, addr, 0), /above 2\^53/);
    new DataView(addr.buffer).setBigUint64(8, (1n << 53n) - 1n, true);
    expect(expectOk(decodeRequest(Req.SET_VRING_ADDR, addr, 0))).toMatchObject({ descUser: 2 ** 53 - 1 });
    expectFail(decodeRequest(Req.SET_STATUS, encodeU64(1n << 60n), 0), /above 2\^53/);
    expectFail(decodeRequest(Req.SET_STATUS, encodeU64(0x100), 0), /wider than 8 bits/);
    expect(expectOk(decodeRequest(Req.SET_FEATURES, encodeU64(~0n), 0))).toEqual({ type: 'features', value: (1n << 64n) - 1n });
  });

  it('reserved bits in vring fd / addr flags / enable / config', () => {
    expectFail(decodeRequest(Req.SET_VRING_KICK, encodeU64(0x200), 1), /reserved bits/);
    expectFail(decodeRequest(Req.SET_VRING_CALL, encodeU64(1n << 40n), 1), /reserved bits/);
    expectFail(
      decodeRequest(Req.SET_VRING_ADDR, encodeVringAddr({ index: 0, flags: 2, descUser: 0, usedUser: 0, availUser: 0, logAddr: 0 }), 0),
      /unknown flags/,
    );
    expectFail(decodeRequest(Req.SET_VRING_ENABLE, encodeVringState(0, 2), 0), /not 0 or 1/);
    expectFail(decodeRequest(Req.GET_CONFIG, encodeConfig(0, 2, new Uint8Array(4)), 0), /unknown config flags/);
    expectFail(decodeRequest(Req.GET_CONFIG, encodeConfig(0, 0, new Uint8Array(0)), 0), /config size 0/);
    expectFail(decodeRequest(Req.GET_CONFIG, encodeConfig(0, 0, new Uint8Array(257)), 0), /config size 257/);
    expectFail(decodeRequest(Req.GET_CONFIG, encodeConfig(250, 0, new Uint8Array(8)), 0), /beyond 256/);
    expectFail(decodeRequest(Req.GET_CONFIG, encodeConfig(0xffffffff, 0, new Uint8Array(8)), 0), /beyond 256/);
  });

  it('unknown and unsupported requests', () => {
    expectFail(decodeRequest(0, new Uint8Array(0), 0), /unknown request 0/);
    expectFail(decodeRequest(1000, new Uint8Array(0), 0), /unknown request 1000/);
    expectFail(decodeRequest(Req.SET_LOG_BASE, new Uint8Array(16), 1), /LOG_SHMFD not offered/);
    expectFail(decodeRequest(Req.SET_LOG_FD, new Uint8Array(0), 1), /LOG_SHMFD not offered/);
    expectFail(decodeRequest(Req.GET_INFLIGHT_FD, new Uint8Array(24), 0), /INFLIGHT_SHMFD/);
    expectFail(decodeRequest(Req.VRING_KICK, encodeVringState(0, 0), 0), /INBAND/);
    expectFail(decodeRequest(Req.IOTLB_MSG, new Uint8Array(32), 0), /not supported/);
  });

  it('flags helpers', () => {
    expect(requestFlags(false)).toBe(1);
    expect(requestFlags(true)).toBe(9);
    expect(REPLY_FLAGS).toBe(1 | FLAG_REPLY);
  });
});
