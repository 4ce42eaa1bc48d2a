// Which images in agent output may load without a click (the rest wait for one).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ImagePolicy, vetImageSource } from '../src/view/images';

const PAGE = 'http://127.0.0.1:8888/lab/tree/chat.ipynb';
const verdict = (src: string, hosts: string[] = []) =>
  vetImageSource(src, new ImagePolicy(hosts), PAGE);

describe('images', () => {
  test('remote images wait for a click, naming their host', () => {
    assert.deepEqual(verdict('https://example.com/a.png'), {
      load: 'on-click',
      url: 'https://example.com/a.png',
      from: 'example.com'
    });
    assert.deepEqual(verdict('http://example.com:8080/a.png?q=secret'), {
      load: 'on-click',
      url: 'http://example.com:8080/a.png?q=secret',
      from: 'example.com:8080'
    });
  });

  test('same-origin and relative images wait too', () => {
    assert.deepEqual(verdict('/files/x.png'), {
      load: 'on-click',
      url: 'http://127.0.0.1:8888/files/x.png',
      from: '127.0.0.1:8888'
    });
    assert.equal(verdict('x.png').load, 'on-click');
    assert.equal(verdict('//evil.example/x.png').load, 'on-click');
  });

  test('data: raster images load at once; SVG and others wait', () => {
    for (const type of ['png', 'jpeg', 'gif', 'webp', 'avif', 'bmp', 'PNG']) {
      assert.equal(verdict(`data:image/${type};base64,AAAA`).load, 'now', type);
    }
    assert.equal(verdict('data:image/png,raw').load, 'now');
    assert.equal(verdict('data:image/svg+xml;base64,PHN2Zz4=').load, 'on-click');
    assert.equal(verdict('data:text/html,<b>').load, 'on-click');
    assert.equal(verdict('data:image/pngx;base64,AAAA').load, 'on-click');
  });

  test('other schemes never load', () => {
    assert.equal(verdict('ftp://example.com/a.png').load, 'never');
    assert.equal(verdict('file:///etc/passwd').load, 'never');
    assert.equal(verdict('javascript:alert(1)').load, 'never');
  });

  test('allowed hosts load at once: exact names and *. suffixes', () => {
    const hosts = ['Example.org', '*.cdn.example.net', '127.0.0.1', '[::1]'];
    assert.equal(verdict('https://example.org/a.png', hosts).load, 'now');
    assert.equal(verdict('http://EXAMPLE.ORG:81/a.png', hosts).load, 'now');
    assert.equal(verdict('https://www.example.org/a.png', hosts).load, 'on-click');
    assert.equal(verdict('https://img.cdn.example.net/a.png', hosts).load, 'now');
    assert.equal(verdict('https://a.b.cdn.example.net/a.png', hosts).load, 'now');
    assert.equal(verdict('https://cdn.example.net/a.png', hosts).load, 'on-click');
    assert.equal(verdict('https://evilcdn.example.net/a.png', hosts).load, 'on-click');
    assert.equal(verdict('https://example.org.evil.com/a.png', hosts).load, 'on-click');
    assert.equal(verdict('/files/x.png', hosts).load, 'now'); // the page's host is allowed
    assert.equal(verdict('http://[::1]:9/a.png', hosts).load, 'now');
  });

  test('a list that is not all strings is read for what it holds', () => {
    const policy = new ImagePolicy(['example.org', 5, null, '*', '*.'] as unknown as string[]);
    assert.equal(vetImageSource('https://example.org/a.png', policy, PAGE).load, 'now');
    assert.equal(vetImageSource('https://other.org/a.png', policy, PAGE).load, 'on-click');
  });
});
