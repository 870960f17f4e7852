// The y-codemirror.next page of the browser test: CodeMirror 6 bound to the Y.Text "content" of a
// document over y-websocket's WebsocketProvider. Bundled by build_page.mjs with esbuild.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { EditorState } from '@codemirror/state'
import { EditorView } from '@codemirror/view'
import { yCollab } from 'y-codemirror.next'

export function open (parent, { base, doc, token, name }) {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(base, doc, ydoc, { params: { token } })
  provider.awareness.setLocalStateField('user', { name, color: '#3366cc' })
  const ytext = ydoc.getText('content')
  const view = new EditorView({
    state: EditorState.create({ doc: ytext.toString(), extensions: [yCollab(ytext, provider.awareness)] }),
    parent
  })
  return {
    view,
    provider,
    text: () => ytext.toString(),
    value: () => view.state.doc.toString(),
    synced: () => provider.synced,
    peers: () => [...provider.awareness.getStates().entries()]
      .filter(([id]) => id !== ydoc.clientID).map(([, s]) => (s.user ? s.user.name : null))
  }
}
