// The notebook widget's `@` source: its kernel's variables. The widget lives in the kernel, so
// its comm asks there directly (jupyter_streamchat/widget/comm.py answers from the user's
// namespace, summarising a value with kernel/variables.py):
//
//   view -> kernel   {streamchat: 'variables', view, id, request: {op: 'list', query} |
//                                                              {op: 'describe', name}}
//   kernel -> view   {streamchat: 'variables', view, id, answer}
//
// Requests wait behind a running cell (comm messages are handled between cells), so each has
// a time limit. The page's notebook cells are out of the kernel's reach: the picker says so
// when nothing matches (JupyterLab's chat panel offers them).

import { AskKernel, ContextSource, variableOptions } from '../view/context';
import { randomId } from '../view/dom';
import type { CommModel } from './commtransport';
import { ENVELOPE } from './commtransport';

const NOTE =
  "Here, only the kernel's variables can be attached; JupyterLab's Chat panel also offers " +
  "the notebook's cells and files.";

/** The variables of the kernel behind `model`. */
export function kernelVariables(model: CommModel): ContextSource {
  const view = randomId();
  const ask: AskKernel = (request, timeoutMs) =>
    new Promise((resolve, reject) => {
      const id = randomId();
      const done = () => {
        clearTimeout(timer);
        model.off('msg:custom', onMessage);
      };
      const onMessage = (content: any) => {
        if (content?.[ENVELOPE] === 'variables' && content.view === view && content.id === id) {
          done();
          const answer = content.answer;
          if (typeof answer?.error === 'string') {
            reject(new Error(answer.error));
          } else {
            resolve(answer ?? {});
          }
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error('the kernel is busy or gone'));
      }, timeoutMs);
      model.on('msg:custom', onMessage);
      try {
        model.send({ [ENVELOPE]: 'variables', view, id, request });
      } catch (e) {
        done();
        reject(e);
      }
    });
  return {
    note: NOTE,
    options: query => variableOptions(ask, query)
  };
}
