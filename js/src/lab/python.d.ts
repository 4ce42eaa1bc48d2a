// Python files are bundled as their text (imported `with { type: 'text' }`): code the lab runs
// in a kernel, kept in the Python package (see contextsources.ts).
declare module '*.py' {
  const text: string;
  export default text;
}
