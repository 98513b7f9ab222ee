// The playground page: record with MediaRecorder (or pick a file), send it, show and play the reply.
// Everything from the server is put in the page with textContent, never as HTML.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const player = $("player");
  if (!player) return;
  // A note refused (or not recorded) is said in the status line, and tied to the controls a note
  // comes from while that line says it: a screen reader back on the upload field hears that it
  // was refused, and why. Anything else the line says next unties it.
  const NOTE_CONTROLS = ["upload", "record"];
  function status(text) {
    $("status").textContent = text;
    for (const id of NOTE_CONTROLS) $(id).removeAttribute("aria-describedby");
    $("upload").removeAttribute("aria-invalid");
  }
  function noteError(text) {
    $("status").textContent = text;
    for (const id of NOTE_CONTROLS) $(id).setAttribute("aria-describedby", "status");
    $("upload").setAttribute("aria-invalid", "true"); // not on the button: ARIA gives buttons none
  }
  let recorder = null;
  let chunks = [];

  // The page comes with its controls off, saying it needs this script: here it is.
  for (const id of ["record", "upload", "refresh-tickets"]) $(id).disabled = false;
  $("status").textContent = "Ready.";

  const CANNOT_RECORD = "This browser cannot record here; upload a file instead.";

  // The reply of an earlier note is not this note's: hidden until this one is answered.
  function hideReply() {
    $("result").hidden = true;
    $("reply").pause();
  }

  async function send(blob, name) {
    const form = new FormData();
    form.append("player", player.value);
    form.append("audio", blob, name);
    hideReply();
    status("Answering…");
    document.body.dataset.state = "answering";
    let response;
    try {
      response = await fetch("/playground/ask", { method: "POST", body: form, headers: { "X-CSRF-Token": csrf } });
    } catch (err) {
      noteError("Could not reach voxdesk: " + err);
      document.body.dataset.state = "error";
      return;
    }
    const body = await response.json().catch(() => ({ error: "Something went wrong (" + response.status + ")." }));
    if (!response.ok) {
      noteError(body.error || "Something went wrong.");
      document.body.dataset.state = "error";
      return;
    }
    show(body);
  }

  function show(body) {
    $("result").hidden = false;
    $("heard").textContent = body.heard || "(not transcribed)";
    $("answer").textContent = body.answer;
    const tools = $("tools");
    tools.replaceChildren();
    for (const call of body.tool_calls) {
      const li = document.createElement("li");
      const name = document.createElement("code");
      name.textContent = call.name;
      li.append(name, " " + JSON.stringify(call.arguments) + (call.ok ? "" : " (failed)"));
      tools.append(li);
    }
    if (!body.tool_calls.length) tools.textContent = "none";
    const timings = $("timings");
    timings.replaceChildren();
    for (const [stage, ms] of Object.entries(body.timings_ms)) {
      const li = document.createElement("li");
      li.textContent = stage + " " + Math.round(ms) + " ms";
      timings.append(li);
    }
    status("Answered by " + body.engine + ".");
    document.body.dataset.state = "answered";
    $("result").focus(); // where the answer is: read next, not left behind on a button
    const audio = $("reply");
    if (body.audio_url) {
      audio.src = body.audio_url;
      audio.play().catch(() => status("Answered: press play to hear it."));
    }
  }

  $("reply").addEventListener("playing", () => { document.body.dataset.played = "yes"; });

  $("record").addEventListener("click", async () => {
    // Without a secure context (plain http off localhost) there is no mediaDevices at all.
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || typeof MediaRecorder === "undefined") {
      noteError(CANNOT_RECORD);
      return;
    }
    let stream;
    try {
      // The recogniser wants the voice as spoken: the browser's echo cancelling, noise gate and
      // gain riding are for calls, and clip or pump a short note.
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (err) {
      noteError("No microphone: " + err.message + ". Upload a file instead.");
      return;
    }
    chunks = [];
    try {
      recorder = new MediaRecorder(stream);
      recorder.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
      recorder.addEventListener("stop", () => {
        stream.getTracks().forEach((t) => t.stop());
        send(new Blob(chunks, { type: recorder.mimeType }), "note.webm");
      });
      recorder.start();
    } catch (err) {
      stream.getTracks().forEach((t) => t.stop()); // the microphone is not left open
      recorder = null;
      noteError(CANNOT_RECORD);
      return;
    }
    $("stop").disabled = false;
    $("stop").focus(); // before Record is disabled under it, or focus falls to the page
    $("record").disabled = true;
    status("Recording… press stop when you are done.");
    document.body.dataset.state = "recording";
  });

  $("stop").addEventListener("click", () => {
    $("record").disabled = false;
    $("record").focus();
    $("stop").disabled = true;
    if (recorder && recorder.state !== "inactive") recorder.stop();
  });

  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) send(file, file.name);
    e.target.value = "";
  });

  // A list shown is the player's chosen then; another player's name above it would mislead.
  // `asked` counts the lists asked for and the players chosen: an answer that comes after either
  // is some earlier choice's, and is dropped.
  let asked = 0;
  player.addEventListener("change", () => {
    asked += 1;
    $("tickets").parentElement.hidden = true;
  });

  $("refresh-tickets").addEventListener("click", async () => {
    const table = $("tickets");
    const mine = ++asked;
    // Whatever this answer is, the list shown is some player's, maybe not the one chosen now.
    table.parentElement.hidden = true;
    let response;
    try {
      response = await fetch("/playground/tickets?player=" + encodeURIComponent(player.value));
    } catch (err) {
      if (mine === asked) status("Could not reach voxdesk: " + err);
      return;
    }
    const body = await response.json().catch(() => ({ error: "Something went wrong (" + response.status + ")." }));
    if (mine !== asked) return;
    if (!response.ok) {
      status(body.error || "Something went wrong.");
      return;
    }
    table.caption.textContent = "Tickets of " + body.player;
    const rows = table.querySelector("tbody");
    rows.replaceChildren();
    for (const t of body.tickets) {
      const tr = document.createElement("tr");
      tr.dataset.key = t.key;
      for (const value of [t.key, t.category, t.status, t.updated_at.slice(0, 16).replace("T", " "), t.description]) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.append(td);
      }
      tr.firstChild.translate = false; // a key a browser's translation would make name nothing
      tr.lastChild.dir = "auto"; // the player's own words, in whichever script they wrote them
      tr.lastChild.className = "desc";
      rows.append(tr);
    }
    if (!body.tickets.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = body.player + " has no tickets.";
      tr.append(td);
      rows.append(tr);
    }
    table.parentElement.hidden = false; // its scrolling box, not to be tabbed to while empty
    // The list appears without a word; the status line is what a screen reader says.
    const n = body.tickets.length;
    status(n ? body.player + " has " + n + " ticket" + (n === 1 ? "" : "s") + "." : body.player + " has no tickets.");
  });
})();
