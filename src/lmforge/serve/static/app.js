// The lmforge playground: chat streamed from /v1/chat/completions, classification from /v1/classify.
// Plain browser JavaScript, no libraries: the page must work on a machine with no network.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, history: [], controller: null };

// ------------------------------------------------------------------------------------ requests

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// The OpenAI-style message of a failed response ({"error": {"message": ...}}), else its status.
async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`.trim();
}

async function post(path, body, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function loadModel() {
  try {
    const response = await fetch("v1/models", { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    state.model = body.data[0].id;
    $("model").textContent = state.model;
    showError("");
  } catch (error) {
    state.model = null;
    $("model").textContent = "no model";
    showError(error.message);
  }
  return state.model;
}

async function model() {
  return state.model || (await loadModel());
}

// The data fields of a server-sent event stream, one string per event (OpenAI ends with "[DONE]").
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield data;
    }
  }
}

// ---------------------------------------------------------------------------------------- chat

function number(id, parse) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const value = parse(raw);
  if (!Number.isFinite(value)) throw new Error(`${id}: ${JSON.stringify(raw)} is not a number`);
  return value;
}

function sampling() {
  const body = {
    temperature: number("temperature", parseFloat),
    top_p: number("top_p", parseFloat),
    max_tokens: number("max_tokens", (s) => parseInt(s, 10)),
    seed: number("seed", (s) => parseInt(s, 10)),
  };
  for (const key of Object.keys(body)) if (body[key] === undefined) delete body[key];
  return body;
}

function addMessage(role, text) {
  const item = document.createElement("div");
  item.className = `message ${role}`;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  item.append(label, content);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("prompt").value;
  if (!text.trim() || state.controller) return;
  showError("");
  const turn = { role: "user", content: text };
  const system = $("system").value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...state.history, turn];
  const userItem = addMessage("user", text);
  const reply = addMessage("assistant", "");
  const content = reply.querySelector(".content");
  reply.dataset.state = "streaming";
  reply.dataset.chunks = "0";
  $("prompt").value = "";
  state.controller = new AbortController();
  setBusy(true);
  let answer = "";
  try {
    const id = await model();
    if (!id) throw new Error("no model: the server's model list could not be read");
    const body = { model: id, messages, stream: true, ...sampling() };
    const response = await post("v1/chat/completions", body, state.controller.signal);
    for await (const data of events(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        answer += delta.content;
        content.textContent = answer;
        reply.dataset.chunks = String(Number(reply.dataset.chunks) + 1);
      }
      if (chunk.choices && chunk.choices[0] && chunk.choices[0].finish_reason) {
        reply.dataset.finish = chunk.choices[0].finish_reason;
      }
    }
    reply.dataset.state = "done";
    state.history.push(turn, { role: "assistant", content: answer });
  } catch (error) {
    if (error.name === "AbortError") {
      reply.dataset.state = "stopped";
      state.history.push(turn, { role: "assistant", content: answer });
    } else {
      // The turn failed: leave it out of the history and give the text back for a retry.
      reply.dataset.state = "error";
      userItem.dataset.state = "error";
      if (!answer) content.textContent = "(no reply)";
      if (!$("prompt").value) $("prompt").value = text;
      showError(error.message);
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

function clearChat() {
  if (state.controller) state.controller.abort();
  state.history = [];
  $("messages").replaceChildren();
  showError("");
}

// ------------------------------------------------------------------------------------ classify

function bar(kind, probability) {
  const element = document.createElement("div");
  element.className = `bar ${kind}`;
  element.dataset.prob = String(probability);
  const fill = document.createElement("span");
  fill.className = "fill";
  fill.style.width = `${(100 * probability).toFixed(2)}%`;
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = probability.toFixed(4);
  element.append(fill, value);
  return element;
}

function describe(body) {
  const parts = [`calibration: ${body.calibration}`];
  if (body.predictive) {
    const passes = body.predictive.mc_passes ? `, ${body.predictive.mc_passes} passes` : "";
    parts.push(`predictive: ${body.predictive.method}${passes}`);
  }
  return parts.join(" · ");
}

async function classify(event) {
  event.preventDefault();
  const text = $("classify-input").value;
  if (!text.trim()) return;
  showError("");
  $("classify-send").disabled = true;
  try {
    const id = await model();
    if (!id) throw new Error("no model: the server's model list could not be read");
    const response = await post("v1/classify", { model: id, input: text });
    const body = await response.json();
    const result = body.data[0];
    $("method").textContent = describe(body);
    $("method").dataset.calibration = body.calibration;
    const rows = [];
    for (const [label, probability] of Object.entries(result.probs)) {
      const name = document.createElement("span");
      name.className = label === result.label ? "bar-label top" : "bar-label";
      name.textContent = label;
      const pair = document.createElement("div");
      pair.className = "bar-pair";
      pair.dataset.label = label;
      pair.append(bar("calibrated", probability), bar("raw", result.raw_probs[label]));
      rows.push(name, pair);
    }
    $("bars").replaceChildren(...rows);
    $("classify-result").hidden = false;
  } catch (error) {
    showError(error.message);
  } finally {
    $("classify-send").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------- page

function selectTab(name) {
  for (const tab of ["chat", "classify"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(tab).hidden = tab !== name;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-field").hidden = document.body.dataset.auth !== "true";
  $("tab-chat").addEventListener("click", () => selectTab("chat"));
  $("tab-classify").addEventListener("click", () => selectTab("classify"));
  $("chat-form").addEventListener("submit", sendChat);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("clear").addEventListener("click", clearChat);
  $("classify-form").addEventListener("submit", classify);
  $("api-key").addEventListener("change", loadModel);
  if (document.body.dataset.auth === "true" && !$("api-key").value) {
    showError("this server needs an API key: enter it above");
  } else {
    loadModel();
  }
});
