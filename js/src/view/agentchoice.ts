// Which agent answers the next message of a conversation, and what the view says about it.
//
// The rule (one for every host: notebook widget, saved-output renderer, Chat panel, tab):
//
//   1. The user's own pick in this view wins, until the conversation changes or the host
//      (Python) makes a newer choice.
//   2. Otherwise the host's agent, if the host chose it explicitly after the conversation's last
//      message (`ChatWidget(agent="x", conversation_id=...)` run, or `chat.agent = "x"` set, after
//      that message; a pick in another view of the same widget counts too).
//   3. Otherwise the agent of the conversation's latest message ("the agent it last used").
//   4. A conversation with no message yet starts with the host's agent.
//
// Rules 2 to 4 choose when the view opens a conversation (its first HISTORY) and when the host
// chooses anew. While it is open, messages from elsewhere (another view, the kernel's
// `chat.send(text, agent="echo")`) do not switch the picker under the user's hand: the view
// keeps its agent as if picked (the note then says the conversation last used another).
//
// A host's agent with no time (a panel's default, a restored tab, `ChatWidget(conversation_id=...)`
// without an agent, an output saved by an older version) is only a default: rule 3 overrides it.
// Whenever the agent that will answer is not the one the conversation last used, the view says
// so beside the picker, so a message never goes silently to another agent.
//
// Pure: no DOM, so the unit tests run it as it is.

/** The host's agent and when the host chose it (seconds since the epoch), or null for a
 * default that the conversation's own last agent overrides. */
export interface HostAgent {
  agentId: string;
  chosenAt: number | null;
}

/** The agent of a conversation's latest message, and when that message was made (seconds since
 * the epoch; null when unknown, e.g. an older server). */
export interface LastUsed {
  agentId: string;
  at: number | null;
}

export interface AgentChoice {
  /** The agent the next message goes to. */
  agentId: string;
  /** Why that is not the conversation's last agent, or '' when it is (or there is none). */
  note: string;
}

export function chooseAgent(
  host: HostAgent,
  last: LastUsed | null,
  picked: string | null
): AgentChoice {
  let agentId: string;
  if (picked) {
    agentId = picked;
  } else if (last === null || !last.agentId) {
    agentId = host.agentId;
  } else if (
    host.chosenAt !== null &&
    host.agentId &&
    (last.at === null || host.chosenAt >= last.at)
  ) {
    agentId = host.agentId;
  } else {
    agentId = last.agentId;
  }
  const note =
    last !== null && last.agentId && agentId && agentId !== last.agentId
      ? `This conversation last used ${last.agentId}; ${agentId} will answer.`
      : '';
  return { agentId, note };
}

/** A time as hosts send it (seconds since the epoch): a positive finite number, else null. */
export function chosenAt(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : null;
}

/** The agent of the latest of `messages` (oldest first), with its time, or null if none. */
export function lastUsed(
  messages: readonly { agentId?: unknown; createdAt?: unknown }[]
): LastUsed | null {
  for (let i = messages.length - 1; i >= 0; i--) {
    const { agentId, createdAt } = messages[i];
    if (typeof agentId === 'string' && agentId) {
      return { agentId, at: chosenAt(createdAt) };
    }
  }
  return null;
}

/** One entry of the agent picker. */
export interface AgentOption {
  /** The agent's id (the option's value). */
  value: string;
  label: string;
  /** The agent's description, shown as the option's tooltip. */
  title: string;
  /** Chosen, but not among the server's agents now. */
  unavailable: boolean;
}

/**
 * The picker's entries for the server's `agents` (as `GET api/agents` and AGENTS_CHANGED list
 * them) when `chosen` is the agent the next message goes to, and the notice to show ('' for
 * none). The list may change at any time (a kernel registers or withdraws a notebook agent):
 * the choice never changes with it. A chosen agent the server does not have stays shown, marked
 * unavailable, rather than the picker silently showing (and sending to) another.
 */
export function agentOptions(
  agents: readonly { id: string; name?: string; description?: string }[],
  chosen: string
): { options: AgentOption[]; problem: string } {
  const options: AgentOption[] = agents.map(agent => ({
    value: agent.id,
    label: agent.name || agent.id,
    title: agent.description ?? '',
    unavailable: false
  }));
  const known = agents.some(agent => agent.id === chosen);
  if (known || !chosen) {
    return { options, problem: '' };
  }
  options.push({
    value: chosen,
    label: `${chosen} (unavailable)`,
    title: 'This agent is not available on this server now.',
    unavailable: true
  });
  return {
    options,
    // With no other agent to pick, the connection's own notice says what is wrong.
    problem:
      agents.length > 0
        ? `The agent "${chosen}" is not available on this server; pick another.`
        : ''
  };
}
