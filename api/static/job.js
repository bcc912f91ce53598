// The job page, kept up to date: every event on the job's stream (GET /jobs/<id>/events) asks for the job's
// state (GET /jobs/<id>) and the page is redrawn from it. Text goes in with textContent only: job fields are
// hostile, so nothing here ever parses a string as HTML.
"use strict";

(function () {
  const root = document.getElementById("job");
  if (!root || root.dataset.live !== "yes") {
    return;
  }
  const RETRYABLE = ["failed", "cancelled"];
  const CANCELLABLE = ["queued", "running"];
  let pending = null;
  let source = null;

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(el, text) {
    if (el && el.textContent !== text) {
      el.textContent = text;
    }
  }

  function setStatusClass(el, status) {
    for (const name of Array.from(el.classList)) {
      if (name.startsWith("status-")) {
        el.classList.remove(name);
      }
    }
    el.classList.add("status-" + status);
  }

  function rate(stage) {
    if (!stage.started_at || !stage.progress.done) {
      return "";
    }
    const end = stage.finished_at ? Date.parse(stage.finished_at) : Date.now();
    const seconds = Math.max((end - Date.parse(stage.started_at)) / 1000, 0);
    return seconds ? (stage.progress.done / seconds).toFixed(1) + "/s" : "";
  }

  function drawStage(li, stage) {
    setStatusClass(li, stage.status);
    const badge = li.querySelector(".stage-status");
    setText(badge, stage.status);
    setStatusClass(badge, stage.status);
    const bar = li.querySelector(".stage-progress");
    const total = stage.progress.total;
    bar.max = total || 1;
    bar.value = total ? stage.progress.done : (stage.status === "done" ? 1 : 0);
    setText(li.querySelector(".stage-count"), stage.progress.done + " / " + total);
    setText(li.querySelector(".stage-rate"), rate(stage));
    setText(li.querySelector(".stage-attempts"), stage.attempts + (stage.attempts === 1 ? " attempt" : " attempts"));
    setText(li.querySelector(".stage-elapsed"), stage.elapsed_s.toFixed(2) + " s");
    const error = li.querySelector(".stage-error");
    setText(error, stage.error || "");
    error.hidden = !stage.error;
  }

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) {
      el.className = className;
    }
    if (text !== undefined) {
      el.textContent = text;
    }
    return el;
  }

  function drawIssues(job) {
    setText(byId("issue-count"), String(job.issue_count));
    setText(byId("issues-shown"), String(job.issues.length));
    byId("issues-capped").hidden = job.issue_count <= job.issues.length;
    const groups = new Map();
    for (const issue of job.issues) {
      const kind = String(issue.kind || "item");
      if (!groups.has(kind)) {
        groups.set(kind, []);
      }
      groups.get(kind).push(issue);
    }
    const sections = [];
    for (const [kind, items] of groups) {
      const section = element("section", "issue-group");
      section.dataset.kind = kind;
      const head = element("h3");
      head.append(element("span", "issue-kind", kind), " ", element("span", "issue-group-count", String(items.length)));
      const list = element("ul");
      for (const issue of items) {
        const li = element("li", "issue severity-" + String(issue.severity));
        li.append(element("code", "issue-path", String(issue.path)), " ",
                  element("span", "issue-message", String(issue.message)), " ",
                  element("span", "issue-meta", issue.stage + ", " + issue.severity));
        list.append(li);
      }
      section.append(head, list);
      sections.push(section);
    }
    byId("issues").replaceChildren(...sections);
  }

  function drawLinks(job) {
    const result = job.result || {};
    const info = result.publishInfo || {};
    const items = [];
    for (const [key, label] of [["publicContentUrl", "published revision"], ["publicPostsUrl", "shared posts"],
                                ["publicMediaUrl", "shared media"]]) {
      const url = info[key];
      if (typeof url === "string" && /^https?:\/\/[^/]/.test(url)) {
        const a = element("a", "", label);
        a.href = url;
        a.rel = "noopener noreferrer";
        const li = element("li");
        li.append(a);
        items.push(li);
      }
    }
    if (job.project_id) {
      const a = element("a", "", "project's live revision (JSON)");
      a.href = "/projects/" + encodeURIComponent(job.project_id);
      const li = element("li");
      li.append(a);
      items.push(li);
    }
    byId("links").replaceChildren(...items);
    const folder = result.distFolder ? String(result.distFolder) : "";
    setText(byId("bundle-path"), folder);
    byId("bundle-folder").hidden = !folder;
    byId("result").hidden = !items.length && !folder;
  }

  function draw(job) {
    const status = byId("job-status");
    setText(status, job.status);
    setStatusClass(status, job.status);
    setText(byId("job-started"), job.started_at || "");
    setText(byId("job-finished"), job.finished_at || "");
    byId("retry-form").hidden = !RETRYABLE.includes(job.status);
    byId("cancel-form").hidden = !CANCELLABLE.includes(job.status);
    const error = job.error || {};
    byId("job-error").hidden = !job.error;
    setText(byId("job-error-stage"), error.stage || "");
    setText(byId("job-error-message"), error.message || "");
    setText(byId("job-error-attempts"), error.attempts ? "after " + error.attempts + " attempt(s)" : "");
    for (const stage of job.stages) {
      const li = root.querySelector('li.stage[data-stage="' + CSS.escape(stage.name) + '"]');
      if (li) {
        drawStage(li, stage);
      }
    }
    drawIssues(job);
    drawLinks(job);
  }

  async function refresh() {
    pending = null;
    const resp = await fetch(root.dataset.stateUrl, {credentials: "same-origin", cache: "no-store"});
    if (!resp.ok) {
      return;  // the next event asks again; a 401 here means the login cookie is gone
    }
    draw(await resp.json());
  }

  function soon() {
    if (pending === null) {
      pending = setTimeout(refresh, 200);  // a burst of progress events costs one request
    }
  }

  function stop() {
    if (source) {
      source.close();
      source = null;
    }
    byId("live-note").hidden = true;
    if (pending !== null) {
      clearTimeout(pending);
    }
    refresh();
  }

  const url = new URL(root.dataset.eventsUrl, window.location.href);
  url.searchParams.set("after", root.dataset.after);
  source = new EventSource(url.toString());
  source.onmessage = soon;
  // named events (progress, started, done, completed, failed, ...) do not reach onmessage
  for (const kind of ["queued", "started", "progress", "done", "retry", "continue", "resumed", "redrive", "log",
                      "completed", "failed", "cancelled", "cancel-requested", "retry-requested",
                      "callback-failed", "duplicate", "stale", "resent"]) {
    source.addEventListener(kind, soon);
  }
  source.addEventListener("end", stop);
  refresh();
}());
