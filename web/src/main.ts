// The board's entry: wires the live task store, the board, the task view,
// the submit form and the token prompt; routes #/ and #/task/ID; keyboard
// shortcuts (n: new task, /: search, Esc: close).
import { connect, describe, forgetToken, isAuthError, saveToken, savedToken, type Client } from "./api.js";
import { BoardView, renderAgents } from "./board.js";
import { byId, h, replace } from "./dom.js";
import { SubmitForm } from "./submit.js";
import { TaskStore, type Connection } from "./tasks.js";
import { TaskView } from "./task.js";

let client: Client = connect();
const currentClient = () => client;

const banner = byId("banner");
const toastArea = byId("toast");

function toast(text: string): void {
  const item = h("p", { class: "toast" }, text);
  toastArea.append(item);
  setTimeout(() => item.remove(), 4000);
}

const store = new TaskStore(currentClient, {
  changed(ids) {
    board.render(ids);
    refreshFilters(ids);
    scheduleStatus();
  },
  connection: showConnection,
  change(change) {
    if (change.task) {
      view.changed(change.task);
    }
  },
});

const board = new BoardView(store.tasks);
const view = new TaskView({ client: currentClient, known: (id) => store.tasks.get(id), toast });
const form = new SubmitForm(currentClient, (id) => {
  toast(`Submitted ${id}.`);
});

const LIVE_TEXT: Record<Connection["state"], string> = {
  connecting: "connecting",
  live: "live",
  unreachable: "offline",
  unauthorized: "no access",
};

function showConnection(connection: Connection): void {
  document.body.dataset.connection = connection.state;
  byId("live-text").textContent = LIVE_TEXT[connection.state];
  switch (connection.state) {
    case "live":
      replace(banner);
      banner.hidden = true;
      void refreshStatus();
      return;
    case "connecting":
      return;
    case "unreachable":
      banner.hidden = false;
      replace(
        banner,
        h("strong", {}, "The server cannot be reached. "),
        `Trying again by itself (${connection.detail}).`,
      );
      return;
    case "unauthorized":
      banner.hidden = false;
      replace(banner, h("strong", {}, savedToken() ? "The token was refused. " : "This server needs a token. "), connection.detail);
      askToken(connection.detail);
      return;
  }
}

// The token prompt.
const tokenDialog = byId<HTMLDialogElement>("token");
function askToken(detail: string): void {
  const input = h("input", { type: "password", id: "token-input", autocomplete: "off", required: true, "aria-label": "token" });
  const remember = h("input", { type: "checkbox", id: "token-remember" });
  replace(
    tokenDialog,
    h(
      "form",
      {
        onsubmit: (event: Event) => {
          event.preventDefault();
          saveToken(input.value.trim(), remember.checked);
          tokenDialog.close();
          client = connect();
          store.restart();
          if (view.openId) {
            const id = view.openId;
            view.close();
            view.open(id);
          }
        },
      },
      h("h2", {}, savedToken() ? "The token was refused" : "A token is needed"),
      h("p", {}, `The server said: ${detail}`),
      h("p", {}, "Paste one of the server's tokens (", h("code", {}, "CLAUDOMATOR_TOKENS"), " or ", h("code", {}, "[auth] tokens"), ")."),
      h("label", { class: "field" }, h("span", {}, "Token"), input),
      h("label", { class: "field check" }, remember, h("span", {}, "Remember it in this browser")),
      h("div", { class: "row end" }, h("button", { type: "submit", class: "primary" }, "Use this token")),
    ),
  );
  if (!tokenDialog.open) {
    tokenDialog.showModal();
  }
  input.focus();
}

// The agents' status: read when the board goes live and after changes, at
// most every 2 s (a change is when it may differ).
let statusTimer = 0;
function scheduleStatus(): void {
  if (!statusTimer) {
    statusTimer = window.setTimeout(() => {
      statusTimer = 0;
      void refreshStatus();
    }, 2000);
  }
}
async function refreshStatus(): Promise<void> {
  try {
    const status = await client.raw.getSystemStatus({});
    replace(byId("agents"), ...renderAgents(status));
  } catch (err) {
    if (!isAuthError(err)) {
      replace(byId("agents"), h("li", { class: "agent agent-off" }, `status unavailable: ${describe(err)}`));
    }
  }
}

// Filters.
const filters = {
  project: byId<HTMLSelectElement>("filter-project"),
  tag: byId<HTMLSelectElement>("filter-tag"),
  agent: byId<HTMLSelectElement>("filter-agent"),
  text: byId<HTMLInputElement>("filter-text"),
};
function applyFilter(): void {
  board.filter = {
    project: filters.project.value,
    tag: filters.tag.value,
    agent: filters.agent.value,
    text: filters.text.value.trim(),
  };
  board.redraw();
}
for (const input of Object.values(filters)) {
  input.addEventListener("input", applyFilter);
}
let known = "";
function refreshFilters(ids?: string[]): void {
  const { projects, tags } = board.choices(ids);
  const key = JSON.stringify([projects, tags]);
  if (key === known) {
    return;
  }
  known = key;
  for (const [select, values, all] of [
    [filters.project, projects, "all projects"],
    [filters.tag, tags, "all tags"],
  ] as const) {
    const chosen = select.value;
    replace(select, h("option", { value: "" }, all), ...values.map((v) => h("option", { value: v }, v)));
    select.value = values.includes(chosen) ? chosen : "";
  }
}

// Routes.
function route(): void {
  const match = /^#\/task\/([0-9A-Z]{26})$/.exec(location.hash);
  if (match) {
    view.open(match[1]!);
  } else {
    view.close();
  }
}
window.addEventListener("hashchange", route);

byId("new-task").addEventListener("click", () => form.open(board.choices().projects));
byId("forget-token").addEventListener("click", () => {
  forgetToken();
  client = connect();
  store.restart();
});

document.addEventListener("keydown", (event) => {
  const target = event.target as HTMLElement;
  const typing = target.matches("input, textarea, select") || document.querySelector("dialog[open]");
  if (event.key === "Escape" && view.openId && !document.querySelector("dialog[open]")) {
    location.hash = "#/";
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  if (event.key === "/") {
    event.preventDefault();
    filters.text.focus();
  } else if (event.key === "n") {
    event.preventDefault();
    form.open(board.choices().projects);
  }
});

board.render();
route();
void store.run();
