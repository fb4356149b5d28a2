// consentry protect page: photos are hashed here, in the browser, by consentry's own PDQ
// (Rust compiled to WebAssembly, pdq.wasm). Only the hashes are sent, to POST /v1/cases.
// The photos are read from the files the visitor chooses and never leave the device: no request
// made by this script carries anything but hashes, case numbers and PINs.
'use strict';

(function () {
  const { t, apply } = window.consentryI18n;
  apply();

  const apiBase = new URL((document.querySelector('meta[name="consentry-api"]') || {}).content || '../', location.href);
  const $ = (id) => document.getElementById(id);

  function api(path) {
    return new URL(path, apiBase).href;
  }

  // POSTs JSON; resolves to {ok, status, body}; rejects only when the server cannot be reached.
  async function postJson(path, value) {
    const resp = await fetch(api(path), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(value),
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
    });
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    return { ok: resp.ok, status: resp.status, body };
  }

  function errorMessage(body, status) {
    if (body && body.error && body.error.message) return String(body.error.message);
    return 'HTTP ' + status;
  }

  const page = document.body.dataset.page;
  if (page === 'protect') protectPage();
  else if (page === 'status' || page === 'withdraw') casePage(page);

  // -------------------------------------------------------------------------------------------
  // The protect page

  function protectPage() {
    // Same limit as `consentry hash`: images claiming more pixels are refused. Images are hashed at
    // full size (the closest this page can come to the hash a platform computes from the same file)
    // up to EXACT_MAX_PIXELS (a 12 MP phone photo, 4032×3024, fits) and reduced beyond, so that
    // memory stays bounded whatever is chosen: one image at a time, about 9.5 bytes per pixel
    // (RGBA plus the hasher's buffers), so at most ~120 MB of wasm memory.
    const MAX_PIXELS = 64000000;
    const EXACT_MAX_PIXELS = 12600000;
    const MIN_QUALITY = 50;
    const THUMB = 96;

    const input = $('files');
    const drop = $('drop');
    const list = $('results');
    const sendBtn = $('send');
    const saveBtn = $('save');
    const items = [];
    let nextId = 1;
    let queue = Promise.resolve();
    let processed = 0;
    let sending = false;

    const hasher = loadHasher();
    hasher.then(
      () => {
        document.body.dataset.hasher = 'ready';
      },
      (why) => {
        const box = $('hasher-unavailable');
        box.textContent = t(why === 'unavailable' ? 'hasher_unavailable' : 'hasher_failed');
        box.hidden = false;
        input.disabled = true;
        document.body.dataset.hasher = why === 'unavailable' ? 'unavailable' : 'failed';
      }
    );

    async function loadHasher() {
      let resp;
      try {
        resp = await fetch(new URL('pdq.wasm', location.href).href, { credentials: 'omit', cache: 'no-cache' });
      } catch (e) {
        throw 'failed';
      }
      if (!resp.ok) throw 'unavailable';
      try {
        const { instance } = await WebAssembly.instantiate(await resp.arrayBuffer(), {});
        return instance.exports;
      } catch (e) {
        throw 'failed';
      }
    }

    input.addEventListener('change', () => {
      addFiles(input.files);
      input.value = '';
    });
    drop.addEventListener('dragover', (e) => {
      e.preventDefault();
      drop.classList.add('over');
    });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('over');
      if (!input.disabled && e.dataTransfer) addFiles(e.dataTransfer.files);
    });
    sendBtn.addEventListener('click', send);
    saveBtn.addEventListener('click', save);

    function addFiles(files) {
      for (const file of Array.from(files || [])) {
        const item = { id: nextId++, file, name: file.name, state: 'waiting', hash: null, quality: null, sentIn: null };
        item.node = renderItem(item);
        items.push(item);
        queue = queue.then(() => processItem(item));
      }
      updateProgress();
      updateButtons();
    }

    function renderItem(item) {
      const li = document.createElement('li');
      li.className = 'item';
      li.dataset.id = String(item.id);
      const thumb = document.createElement('canvas');
      thumb.className = 'thumb';
      thumb.width = THUMB;
      thumb.height = THUMB;
      thumb.setAttribute('role', 'img');
      thumb.setAttribute('aria-label', t('thumb', { name: item.name }));
      const body = document.createElement('div');
      body.className = 'body';
      const name = document.createElement('p');
      name.className = 'name';
      name.textContent = item.name;
      const status = document.createElement('p');
      status.className = 'status';
      status.textContent = t('st_waiting');
      const code = document.createElement('code');
      code.className = 'hash';
      code.hidden = true;
      body.append(name, status, code);
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'secondary small';
      remove.textContent = t('remove');
      remove.setAttribute('aria-label', t('remove_label', { name: item.name }));
      remove.addEventListener('click', () => removeItem(item));
      li.append(thumb, body, remove);
      list.append(li);
      $('results-empty').hidden = true;
      return { li, thumb, status, code };
    }

    function removeItem(item) {
      const i = items.indexOf(item);
      if (i < 0) return;
      items.splice(i, 1);
      if (item.state !== 'waiting' && item.state !== 'hashing') processed--;
      item.removed = true;
      item.node.li.remove();
      $('results-empty').hidden = items.length > 0;
      refreshDuplicates();
      updateProgress();
      updateButtons();
      sendBtn.focus();
    }

    function setState(item, state, key, vars) {
      item.state = state;
      item.node.li.dataset.state = state;
      item.node.status.textContent = t(key, vars);
    }

    async function processItem(item) {
      if (item.removed) return;
      setState(item, 'hashing', 'st_hashing');
      let wasm;
      try {
        wasm = await hasher;
      } catch (e) {
        setState(item, 'error', 'st_decode');
        return finish(item);
      }
      try {
        await hashFile(item, wasm);
      } catch (e) {
        setState(item, 'error', 'st_decode');
      }
      finish(item);
    }

    function finish(item) {
      if (!item.removed) processed++;
      refreshDuplicates();
      updateProgress();
      updateButtons();
    }

    async function hashFile(item, wasm) {
      const file = item.file;
      // Only the header is read to decide how to decode (and to tell non-images apart).
      const head = new Uint8Array(await file.slice(0, 1 << 20).arrayBuffer());
      const info = sniff(head);
      if (!info) return setState(item, 'error', 'st_not_image');
      if (info.unsupported) return setState(item, 'error', 'st_unsupported', { format: info.format });
      let w = info.width;
      let h = info.height;
      if (w && h && info.orientation >= 5) [w, h] = [h, w];
      if (w && h && w * h > MAX_PIXELS) {
        return setState(item, 'error', 'st_too_large', { mp: Math.round((w * h) / 1e6) });
      }
      let bmp = await decode(file, info.format, w, h);
      if (!bmp) return setState(item, 'error', 'st_decode');
      if (!w) {
        // A format whose header is not read here (AVIF): check the decoded size, reduce if needed.
        if (bmp.width * bmp.height > MAX_PIXELS) {
          const mp = Math.round((bmp.width * bmp.height) / 1e6);
          bmp.close();
          return setState(item, 'error', 'st_too_large', { mp });
        }
        if (bmp.width * bmp.height > EXACT_MAX_PIXELS) {
          const [bw, bh] = [bmp.width, bmp.height];
          bmp.close();
          bmp = await decode(file, info.format, bw, bh);
          if (!bmp) return setState(item, 'error', 'st_decode');
        }
      }
      if (item.removed) {
        bmp.close();
        return;
      }
      const reduced = w && (bmp.width !== w || bmp.height !== h);
      let out;
      try {
        drawThumb(item.node.thumb, bmp);
        out = hashBitmap(wasm, bmp);
      } finally {
        bmp.close();
      }
      item.hash = out.hash;
      item.quality = out.quality;
      item.derive = out.derive;
      if (out.derive) item.node.li.dataset.derive = out.derive;
      item.width = out.width;
      item.height = out.height;
      item.node.code.textContent = out.hash;
      item.node.code.hidden = false;
      item.node.li.dataset.hash = out.hash;
      item.node.li.dataset.quality = String(out.quality);
      item.node.li.dataset.size = out.width + 'x' + out.height;
      document.body.dataset.wasmMemory = String(wasm.memory.buffer.byteLength);
      if (out.quality < MIN_QUALITY) return setState(item, 'low', 'st_low_quality', { q: out.quality });
      if (reduced) return setState(item, 'ok', 'st_reduced', { w: out.width, h: out.height, q: out.quality });
      setState(item, 'ok', 'st_ok', { q: out.quality });
    }

    // The scale divisor: a memory bound only. (consentry-media's fast path reduces some large
    // JPEGs too, but from their DCT data; a browser can only resample the decoded pixels, which
    // moves the hash much further — measured 26 bits on a 2600×2100 JPEG — so the page does not.)
    function divisor(format, w, h) {
      let d = 1;
      while (Math.ceil(w / d) * Math.ceil(h / d) > EXACT_MAX_PIXELS) d *= 2;
      return d;
    }

    // Decodes without colour conversion or alpha premultiplication, so that the pixels are the
    // file's own (as `consentry hash` reads them), turned upright by the EXIF orientation.
    async function decode(file, format, w, h) {
      const opts = { colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image' };
      if (w && h) {
        const d = divisor(format, w, h);
        if (d > 1) {
          opts.resizeWidth = Math.ceil(w / d);
          opts.resizeHeight = Math.ceil(h / d);
          opts.resizeQuality = 'high';
        }
      }
      try {
        return await createImageBitmap(file, opts);
      } catch (e) {
        return null;
      }
    }

    function drawThumb(canvas, bmp) {
      const s = Math.min(THUMB / bmp.width, THUMB / bmp.height, 1);
      const tw = Math.max(1, Math.round(bmp.width * s));
      const th = Math.max(1, Math.round(bmp.height * s));
      const ctx = canvas.getContext('2d');
      ctx.clearRect(0, 0, THUMB, THUMB);
      ctx.drawImage(bmp, (THUMB - tw) / 2, (THUMB - th) / 2, tw, th);
    }

    function hashBitmap(wasm, bmp) {
      const w = bmp.width;
      const h = bmp.height;
      const canvas = typeof OffscreenCanvas === 'function' ? new OffscreenCanvas(w, h) : document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
      ctx.drawImage(bmp, 0, 0);
      let rgba = ctx.getImageData(0, 0, w, h).data;
      canvas.width = 0;
      canvas.height = 0;
      const len = w * h * 4;
      const px = wasm.cs_alloc(len);
      const hexPtr = wasm.cs_alloc(64);
      try {
        // The memory may have grown (and its buffer changed) in cs_alloc: read it afterwards.
        new Uint8Array(wasm.memory.buffer, px, len).set(rgba);
        rgba = null;
        // The signature starts with the photo's PDQ hash and quality (computed on these same
        // pixels), so the PDQ hasher runs separately only when there is no signature.
        const derive = deriveSignature(wasm, px, w, h);
        const own = derive && pdqOfSignature(derive);
        if (own) return { hash: own.hash, quality: own.quality, derive, width: w, height: h };
        const quality = wasm.cs_hash_rgba(px, w, h, hexPtr);
        if (quality < 0) throw new Error('hasher refused the pixels');
        const hash = String.fromCharCode.apply(null, new Uint8Array(wasm.memory.buffer, hexPtr, 64));
        return { hash, quality, derive, width: w, height: h };
      } finally {
        wasm.cs_free(px, len);
        wasm.cs_free(hexPtr, 64);
      }
    }

    // The derivative signature of the same pixels (already in wasm memory): the code that also
    // catches cropped, padded, captioned or partly replaced copies. Base64 text, as
    // `consentry derive` prints it; null when this module has no derive extraction.
    function deriveSignature(wasm, px, w, h) {
      if (typeof wasm.cs_derive_rgba !== 'function') return null;
      const cap = wasm.cs_derive_max_len();
      const out = wasm.cs_alloc(cap);
      try {
        const n = wasm.cs_derive_rgba(px, w, h, out, cap);
        if (n <= 0) return null;
        return String.fromCharCode.apply(null, new Uint8Array(wasm.memory.buffer, out, n));
      } finally {
        wasm.cs_free(out, cap);
      }
    }

    // The PDQ hash (hex) and quality at the head of a signature (format versions 1 to 3 begin
    // alike: [version][PDQ 32 bytes][quality][n]...), or null.
    function pdqOfSignature(b64) {
      let bin;
      try {
        bin = atob(b64);
      } catch (e) {
        return null;
      }
      const version = bin.charCodeAt(0);
      if (bin.length < 35 || version < 1 || version > 3) return null;
      let hex = '';
      for (let i = 1; i <= 32; i++) hex += bin.charCodeAt(i).toString(16).padStart(2, '0');
      return { hash: hex, quality: bin.charCodeAt(33) };
    }

    // Marks the second and later photos with the same hash (they are sent once).
    function refreshDuplicates() {
      const seen = new Set();
      for (const item of items) {
        if (item.state === 'dup') setState(item, 'ok', 'st_ok', { q: item.quality });
        if (item.state !== 'ok' || !item.hash) continue;
        if (seen.has(item.hash)) setState(item, 'dup', 'st_duplicate');
        else seen.add(item.hash);
      }
    }

    function updateProgress() {
      const box = $('progress-box');
      box.hidden = items.length === 0;
      const bar = $('progress');
      bar.max = Math.max(1, items.length);
      bar.value = processed;
      $('progress-text').textContent = t('progress', { done: processed, total: items.length });
      document.body.dataset.busy = processed < items.length ? 'yes' : 'no';
    }

    function usable(onlyUnsent) {
      const seen = new Set();
      const out = [];
      for (const item of items) {
        if (item.state !== 'ok' || !item.hash || seen.has(item.hash)) continue;
        if (onlyUnsent && item.sentIn) continue;
        seen.add(item.hash);
        out.push(item);
      }
      return out;
    }

    function updateButtons() {
      sendBtn.disabled = sending || usable(true).length === 0;
      saveBtn.disabled = usable(false).length === 0;
    }

    async function send() {
      const toSend = usable(true);
      const err = $('send-error');
      err.hidden = true;
      if (toSend.length === 0) {
        $('send-status').textContent = t('nothing_to_send');
        return;
      }
      sending = true;
      updateButtons();
      $('send-status').textContent = t('sending', { n: toSend.length });
      let r;
      try {
        // Codes only (per photo its PDQ hash with its quality, and its derivative signature): no
        // file name, no pixel, no size.
        const hashes = toSend.flatMap((i) => {
          const codes = [{ hash: i.hash, quality: i.quality }];
          if (i.derive) codes.push({ signal: 'derive', hash: i.derive });
          return codes;
        });
        r = await postJson('v1/cases', { hashes });
      } catch (e) {
        r = null;
      }
      sending = false;
      $('send-status').textContent = '';
      if (!r || !r.ok) {
        err.textContent = r ? t('err_server', { message: errorMessage(r.body, r.status) }) : t('err_network');
        err.hidden = false;
        document.body.dataset.sendResult = r ? 'refused' : 'unreachable';
        updateButtons();
        return;
      }
      const number = r.body.case_number;
      for (const item of toSend) {
        item.sentIn = number;
        item.node.li.dataset.sent = number;
      }
      $('case-number').textContent = number;
      $('case-pin').textContent = r.body.pin;
      $('case-count').textContent = t('case_count', { n: toSend.length });
      const box = $('case');
      box.hidden = false;
      document.body.dataset.sendResult = 'created';
      updateButtons();
      box.focus();
      box.scrollIntoView({ block: 'start' });
    }

    // The usable codes as `consentry hash -f csv` prints them (`hash,quality,path,signal_type`):
    // per photo its PDQ hash and, when computed, its derivative signature, so that a helpline can
    // import the file into a bank as it is (`POST /v1/banks/NAME/import?format=csv`). Saved by the
    // browser to the device: nothing is sent.
    function save() {
      const name = (i) => '"' + i.name.replace(/[\r\n]/g, ' ').replace(/"/g, '""') + '"';
      const lines = ['hash,quality,path,signal_type'];
      for (const i of usable(false)) {
        lines.push(i.hash + ',' + i.quality + ',' + name(i) + ',pdq');
        if (i.derive) lines.push(i.derive + ',' + i.quality + ',' + name(i) + ',derive');
      }
      const blob = new Blob([lines.join('\n') + '\n'], { type: 'text/csv' });
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      const file = 'consentry-codes.csv';
      a.href = url;
      a.download = file;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      $('send-status').textContent = t('saved', { file });
    }
  }

  // Reads the format, size and EXIF orientation from the first bytes of a file; null when it is
  // not an image; {unsupported: true} for images browsers do not decode (TIFF, HEIC).
  function sniff(b) {
    const u16be = (i) => (b[i] << 8) | b[i + 1];
    const u16le = (i) => b[i] | (b[i + 1] << 8);
    const u32be = (i) => ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
    const u32le = (i) => b[i] + (b[i + 1] << 8) + (b[i + 2] << 16) + ((b[i + 3] << 24) >>> 0);
    const ascii = (i, n) => String.fromCharCode.apply(null, b.subarray(i, i + n));
    if (b.length < 12) return null;
    if (b[0] === 0x89 && ascii(1, 3) === 'PNG' && b.length >= 24) {
      return { format: 'PNG', width: u32be(16), height: u32be(20), orientation: 1 };
    }
    if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return sniffJpeg(b, u16be, u32be, u16le, u32le);
    if (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a') {
      return { format: 'GIF', width: u16le(6), height: u16le(8), orientation: 1 };
    }
    if (ascii(0, 4) === 'RIFF' && ascii(8, 4) === 'WEBP' && b.length >= 30) {
      const kind = ascii(12, 4);
      let w = 0;
      let h = 0;
      if (kind === 'VP8 ') {
        w = u16le(26) & 0x3fff;
        h = u16le(28) & 0x3fff;
      } else if (kind === 'VP8L') {
        const bits = u32le(21);
        w = (bits & 0x3fff) + 1;
        h = ((bits >>> 14) & 0x3fff) + 1;
      } else if (kind === 'VP8X') {
        w = 1 + (b[24] | (b[25] << 8) | (b[26] << 16));
        h = 1 + (b[27] | (b[28] << 8) | (b[29] << 16));
      }
      return { format: 'WebP', width: w, height: h, orientation: 1 };
    }
    if (b[0] === 0x42 && b[1] === 0x4d && b.length >= 26) {
      const w = u32le(18) | 0;
      const h = u32le(22) | 0;
      return { format: 'BMP', width: Math.abs(w), height: Math.abs(h), orientation: 1 };
    }
    if ((b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a && b[3] === 0) || (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && b[3] === 0x2a)) {
      return { format: 'TIFF', unsupported: true };
    }
    if (ascii(4, 4) === 'ftyp') {
      const brand = ascii(8, 4);
      if (brand === 'avif' || brand === 'avis') return { format: 'AVIF', width: 0, height: 0, orientation: 1 };
      if (['heic', 'heix', 'hevc', 'hevx', 'heim', 'heis', 'mif1', 'msf1'].includes(brand)) {
        return { format: 'HEIC', unsupported: true };
      }
    }
    return null;
  }

  function sniffJpeg(b, u16be, u32be) {
    let orientation = 1;
    let i = 2;
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) break;
      const m = b[i + 1];
      if (m === 0xff) {
        i++;
        continue;
      }
      if (m === 0x01 || (m >= 0xd0 && m <= 0xd8)) {
        i += 2;
        continue;
      }
      const len = u16be(i + 2);
      if (m === 0xe1 && String.fromCharCode.apply(null, b.subarray(i + 4, i + 8)) === 'Exif') {
        const o = exifOrientation(b, i + 10, Math.min(b.length, i + 2 + len));
        if (o) orientation = o;
      }
      if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
        return { format: 'JPEG', height: u16be(i + 5), width: u16be(i + 7), orientation };
      }
      i += 2 + len;
    }
    // Size not found in the first megabyte: decoded at full size, then checked.
    return { format: 'JPEG', width: 0, height: 0, orientation };
  }

  function exifOrientation(b, t0, end) {
    if (t0 + 8 > end) return 0;
    const le = b[t0] === 0x49;
    const u16 = (i) => (le ? b[i] | (b[i + 1] << 8) : (b[i] << 8) | b[i + 1]);
    const u32 = (i) => (le ? b[i] + (b[i + 1] << 8) + (b[i + 2] << 16) + b[i + 3] * 16777216 : b[i] * 16777216 + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3]);
    const ifd = t0 + u32(t0 + 4);
    if (ifd + 2 > end) return 0;
    const n = u16(ifd);
    for (let k = 0; k < n; k++) {
      const e = ifd + 2 + 12 * k;
      if (e + 12 > end) return 0;
      if (u16(e) === 0x0112) {
        const v = u16(e + 8);
        return v >= 1 && v <= 8 ? v : 0;
      }
    }
    return 0;
  }

  // -------------------------------------------------------------------------------------------
  // Status and withdrawal

  function casePage(kind) {
    const form = $('case-form');
    const err = $('form-error');
    const result = $('result');
    const go = $('go');
    const fmtDate = (ms) => (ms ? new Date(ms).toLocaleString(document.documentElement.lang) : '');

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      err.hidden = true;
      result.hidden = true;
      const number = $('number').value.replace(/[\s-]/g, '');
      const pin = $('pin').value.replace(/\s/g, '');
      const fail = (text, focus) => {
        err.textContent = text;
        err.hidden = false;
        document.body.dataset.result = 'error';
        if (focus) focus.focus();
      };
      if (!number || !pin) return fail(t('err_fields'), number ? $('pin') : $('number'));
      if (kind === 'withdraw' && !$('confirm').checked) return fail(t('err_confirm'), $('confirm'));
      go.disabled = true;
      let r;
      try {
        r = await postJson('v1/cases/' + encodeURIComponent(number) + '/' + (kind === 'status' ? 'status' : 'withdraw'), { pin });
      } catch (e2) {
        r = null;
      }
      go.disabled = false;
      if (!r) return fail(t('err_unreachable'));
      if (!r.ok) {
        const code = r.body && r.body.error ? r.body.error.code : '';
        if (code === 'bad_credentials' || r.status === 401 || r.status === 404) return fail(t('err_credentials'), $('number'));
        if (code === 'case_locked') return fail(t('err_locked'));
        return fail(t('err_other', { message: errorMessage(r.body, r.status) }));
      }
      const v = r.body;
      $('result-h').textContent = t('result_h', { number: v.case_number });
      document.body.dataset.result = v.status;
      if (kind === 'withdraw') {
        $('result-status').textContent = t('withdraw_done', { number: v.case_number });
        $('pin').value = '';
      } else {
        $('result-status').textContent = t('status_' + v.status);
        $('result-dates').textContent = t('status_dates', { created: fmtDate(v.created_at), updated: fmtDate(v.updated_at) });
        // One line per photo: its PDQ code (its derivative signature, a long text, is not listed).
        const hashes = (v.hashes || []).filter((x) => (x.signal || 'pdq') === 'pdq');
        // No code left: a withdrawn case's codes were deleted (the service's retention).
        $('result-hashes').textContent = hashes.length === 0 ? t('status_deleted')
          : t('status_hashes', { active: hashes.filter((x) => x.active).length, total: hashes.length });
        // What was stopped, counted over all its codes (absent when the service does not say).
        const c = v.caught;
        $('result-caught').textContent = !c ? '' : c.matches > 0
          ? t('status_caught', { matches: c.matches, sources: c.sources, last: fmtDate(c.last_at) })
          : t('status_caught_none');
        const ul = $('result-list');
        ul.textContent = '';
        for (const x of hashes) {
          const li = document.createElement('li');
          const code = document.createElement('code');
          code.textContent = x.hash;
          li.append(code, ' — ' + t(x.active ? 'code_active' : 'code_inactive'));
          ul.append(li);
        }
      }
      result.hidden = false;
      result.focus();
    });
  }
})();
